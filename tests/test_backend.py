"""The OpenAI-compatible generator backend, against a real server: another ragft serving the tiny model.

Any server speaking the same API exercises the same client code, and a ragft upstream lets the test compare remote
answers with in-process ones token for token; vLLM itself (its CPU build) runs in tests/test_backend_vllm.py, where
.venv-vllm exists.
"""

import json

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from eval import pipeline
from service.app.api.main import create_app
from service.app.cli import app as cli
from service.arms import ARMS, Query, answer
from service.backend import BackendError, BackendUnavailable, module_name
from service.kinds import KINDS
from service.runtime import Runtime
from tests.live import serving

QUESTIONS = [Query("What does the Kestrel K2 cost?"), Query("camera battery ?"), Query("firmware of the k4")]


@pytest.fixture
def upstream(settings, corpus):
    """A ragft on 127.0.0.1 serving the tiny model: its 'base' model answers like the base arm."""
    app = create_app(settings.model_copy(update={"api": settings.api.model_copy(update={"warm_up": False})}), corpus)
    with serving(app) as url:
        yield f"{url}/v1"


def remote(settings, url: str, model: str = "base"):
    update = {"generator_backend": "openai", "backend_url": url, "backend_model": model, "backend_timeout_s": 30}
    return settings.model_copy(update={"models": settings.models.model_validate(settings.models.model_dump() | update)})


def test_remote_base_arm_answers_exactly_as_in_process(settings, corpus, upstream):
    local = answer(ARMS["base"], Runtime(settings, corpus), QUESTIONS)
    runtime = Runtime(remote(settings, upstream), corpus)
    far = answer(ARMS["base"], runtime, QUESTIONS)
    assert [a.text for a in far] == [a.text for a in local]  # greedy both ways, in the caller's order
    assert [a.prompt_tokens for a in far] == [a.prompt_tokens for a in local]
    assert [a.generated_tokens for a in far] == [a.generated_tokens for a in local]
    assert runtime._generator is None  # nothing was loaded in-process
    assert far[0].batch_size == 3


def test_remote_rag_arm_retrieves_here_and_generates_there(settings, corpus, upstream):
    runtime = Runtime(remote(settings, upstream), corpus)
    runtime.index()
    (result,) = answer(ARMS["rag"], runtime, [QUESTIONS[0]])
    (local,) = answer(ARMS["rag"], Runtime(settings, corpus), [QUESTIONS[0]])
    assert len(result.passages) == settings.retrieval.top_k and result.passages == local.passages
    assert result.generated_tokens > 0 and runtime._generator is None


def test_remote_streaming_through_the_api_matches_the_whole_answer(settings, corpus, upstream):
    client = TestClient(create_app(remote(settings, upstream), corpus))
    body = {"model": "base", "messages": [{"role": "user", "content": "what is a router ?"}], "max_tokens": 5}
    whole = client.post("/v1/chat/completions", json=body).json()
    with client.stream("POST", "/v1/chat/completions", json=body | {"stream": True}) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    assert (
        "".join(e["choices"][0]["delta"].get("content", "") for e in events).strip()
        == whole["choices"][0]["message"]["content"]
    )
    assert events[-1]["usage"] == whole["usage"]


def test_a_lora_arm_the_backend_does_not_serve_is_an_error_naming_the_module(settings, full_corpus, upstream):
    pipeline.train_artifacts(settings, pipeline.open_runtime(settings, full_corpus), [KINDS["lora"]])
    client = TestClient(create_app(remote(settings, upstream), full_corpus))
    r = client.post("/v1/query", json={"question": "What does the Kestrel K2 cost?", "arms": ["lora"]})
    name = module_name(full_corpus, "lora", "questions")  # a question goes to the questions adapter
    assert r.status_code == 409 and f"--lora-modules {name}=" in r.json()["detail"]  # never the base model instead
    with pytest.raises(BackendError, match="does not serve"):
        answer(ARMS["lora"], Runtime(remote(settings, upstream), full_corpus), [QUESTIONS[0]])


def test_vllm_args_name_one_module_per_trained_adapter(settings, full_corpus):
    runner = CliRunner()
    overrides = [
        "--set",
        f"models.generator={settings.models.generator}",
        "--set",
        f"artifact_dir={settings.artifact_dir}",
    ]
    refused = runner.invoke(cli, ["backend", "vllm-args", "--corpus", str(full_corpus), *overrides])
    assert refused.exit_code == 2 and "ragft train --corpus" in refused.output
    runtime = pipeline.open_runtime(settings, full_corpus)  # indexes for rag_lora, which reads passages
    pipeline.train_artifacts(settings, runtime, [KINDS["lora"], KINDS["rag_lora"]])
    out = runner.invoke(cli, ["backend", "vllm-args", "--corpus", str(full_corpus), *overrides])
    assert out.exit_code == 0, out.output
    args = out.output.split()
    assert settings.lora.rank == 4 and args[args.index("--max-lora-rank") + 1] == "8"  # vLLM's next allowed rank
    modules = args[args.index("--lora-modules") + 1 :]
    assert [m.split("=")[0] for m in modules] == [
        module_name(full_corpus, kind, group) for kind in ("lora", "rag_lora") for group in ("behaviour", "questions")
    ]
    assert all((settings.artifact_dir / "adapters").resolve().as_posix() in m for m in modules)


def test_backend_down_is_503_and_not_ready(settings, corpus):
    client = TestClient(create_app(remote(settings, "http://127.0.0.1:9/v1"), corpus))
    r = client.post("/v1/query", json={"question": "hello ?", "arms": ["base"]})
    assert r.status_code == 503 and "RAGFT_MODELS__BACKEND_URL" in r.json()["detail"] and r.headers["retry-after"]
    assert client.get("/readyz").json()["generator_loaded"] is False
    with pytest.raises(BackendUnavailable):
        Runtime(remote(settings, "http://127.0.0.1:9/v1"), corpus).load_generation()


def test_openai_backend_needs_its_url_and_model(settings):
    with pytest.raises(ValueError, match="RAGFT_MODELS__BACKEND_URL"):
        settings.models.model_validate(settings.models.model_dump() | {"generator_backend": "openai"})


def test_load_adapters_reloads_each_module_into_the_running_server(settings, full_corpus, upstream):
    from fastapi import FastAPI

    from service.backend import adapter_modules, load_adapters
    from tests.live import serving

    with pytest.raises(BackendError):  # nothing trained yet: the fix names ragft train
        load_adapters(remote(settings, upstream), full_corpus)
    pipeline.train_artifacts(settings, pipeline.open_runtime(settings, full_corpus), [KINDS["lora"]])
    with pytest.raises(BackendError, match="VLLM_ALLOW_RUNTIME_LORA_UPDATING"):  # a server without runtime loading
        load_adapters(remote(settings, upstream), full_corpus)

    modules = adapter_modules(settings, full_corpus)
    first = next(iter(modules))
    calls, served = [], {"base", first}  # a vLLM started with one of the two modules
    vllm = FastAPI()

    @vllm.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "vllm"}
                                           for m in sorted(served)]}  # fmt: skip

    @vllm.post("/v1/{step}_lora_adapter")
    def lora(step: str, body: dict):
        calls.append((step, body))
        (served.discard if step == "unload" else served.add)(body["lora_name"])
        return "Success"

    with serving(vllm) as url:
        assert load_adapters(remote(settings, f"{url}/v1"), full_corpus) == list(modules)
    expected = []
    for name, folder in modules.items():  # a served module is unloaded first, then each is loaded from its folder
        expected += [("unload", {"lora_name": name})] if name == first else []
        expected.append(("load", {"lora_name": name, "lora_path": str(folder)}))
    assert calls == expected
    assert served == {"base", *modules}
