"""The OpenAI-compatible generator backend, against a real server: another ragft serving the tiny model.

Any server speaking the same API exercises the same client code, and a ragft upstream lets the test compare remote
answers with in-process ones token for token; vLLM itself (its CPU build) runs in tests/test_backend_vllm.py, where
.venv-vllm exists.
"""

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from ragft.eval.running import pipeline
from ragft.service.app.api.main import create_app
from ragft.service.app.cli import app as cli
from ragft.service.arms import ARMS, Query, answer
from ragft.service.backend import BackendError, BackendUnavailable, module_name
from ragft.service.kinds import KINDS
from ragft.service.runtime import Runtime
from typer.testing import CliRunner

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
    adapters_root = (settings.artifact_dir / "adapters").resolve()
    for m in modules:  # a link named after the training, to the adapter's folder (tests of it: the retrain test)
        path = Path(m.split("=", 1)[1])
        assert path.parent == (settings.artifact_dir / "served").resolve() and path.is_symlink()
        assert path.resolve().is_relative_to(adapters_root) and (path / "adapter_config.json").is_file()


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
    from ragft.service.backend import adapter_modules, load_adapters

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


def test_a_retrained_adapter_is_loaded_into_the_server_by_the_next_request(settings, full_corpus):
    """A stand-in vLLM (vLLM cannot run in CI; tests/test_backend_vllm.py runs the real one): it lists each module
    with the path it loaded it from, as vLLM's GET /v1/models does (`root`), takes runtime loads, records them, and
    answers with the path the asked module was loaded from, so the answer shows which training served it."""
    from fastapi import FastAPI
    from ragft.service.backend import adapter_modules

    from tests.live import serving

    runtime = pipeline.open_runtime(settings, full_corpus)
    pipeline.train_artifacts(settings, runtime, [KINDS["lora"]])
    name = module_name(full_corpus, "lora", "questions")  # a question goes to the questions adapter
    started_with = adapter_modules(settings, full_corpus)  # what `vllm-args` hands the server at its start
    roots = {"base": None, **{m: str(p) for m, p in started_with.items()}}
    calls = []
    vllm = FastAPI()

    @vllm.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "vllm", "root": r}
                                           for m, r in sorted(roots.items())]}  # fmt: skip

    @vllm.post("/v1/{step}_lora_adapter")
    def lora(step: str, body: dict):
        calls.append((step, body))
        if step == "unload":
            del roots[body["lora_name"]]
        else:
            assert body["lora_name"] not in roots  # vLLM refuses a second load under a listed name
            roots[body["lora_name"]] = body["lora_path"]
        return "Success"

    @vllm.post("/v1/chat/completions")
    def chat(body: dict):
        text = f"from {roots[body['model']]}"
        return {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}  # fmt: skip

    def ask(runtime):
        return answer(ARMS["lora"], runtime, [QUESTIONS[0]])[0].text

    with serving(vllm) as url:
        serving_settings = remote(settings, f"{url}/v1")
        server_side = Runtime(serving_settings, full_corpus)  # a long-lived `ragft serve` answering through it
        assert ask(server_side) == f"from {started_with[name]}" and calls == []  # the server holds this training
        # a retrain in another process (ragft train --force): the next request loads it, under a new path
        retrained = settings.model_copy(update={"generation": settings.generation.model_copy(update={"seed": 7})})
        pipeline.train_artifacts(retrained, pipeline.open_runtime(retrained, full_corpus), [KINDS["lora"]], force=True)
        now = adapter_modules(settings, full_corpus)[name]
        assert now != started_with[name]
        assert ask(server_side) == f"from {now}"
        assert calls == [("unload", {"lora_name": name}), ("load", {"lora_name": name, "lora_path": str(now)})]
        assert ask(server_side) == f"from {now}" and len(calls) == 2  # loaded once, not on every request
        # another process (a new `ragft eval`) sees the server already holds the current training: nothing loaded
        assert ask(Runtime(serving_settings, full_corpus)) == f"from {now}" and len(calls) == 2
        # the behaviour module, retrained too but not asked for yet, is loaded when a row first asks for it
        behaviour = module_name(full_corpus, "lora", "behaviour")
        assert roots[behaviour] == str(started_with[behaviour])
