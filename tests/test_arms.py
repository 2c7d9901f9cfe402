import pytest
import torch
from ragft.service.adapters import AdapterManifest, AdapterMismatch, ArtifactMissing
from ragft.service.arms import ARMS, Query, UnknownArm, answer, compare, parse_arm, parse_arms
from ragft.service.kinds import KINDS
from ragft.service.prompts import Example
from ragft.service.runtime import Runtime


@pytest.mark.parametrize(
    ("spelling", "name"),
    [("base", "base"), ("RAG", "rag"), ("rag+lora", "rag_lora"), ("rag-lora", "rag_lora"), (" scratch ", "scratch")],
)
def test_arm_spellings(spelling, name):
    assert parse_arm(spelling).name == name


def test_unknown_or_empty_arms_list_the_choices():
    with pytest.raises(UnknownArm, match="unknown arm 'ragg'; choose from base, fewshot, rag"):
        parse_arm("ragg")
    with pytest.raises(UnknownArm, match="no arm given"):
        parse_arms(" , ")
    assert [a.name for a in parse_arms("rag,base,rag+lora,rag_lora")] == ["rag", "base", "rag_lora"]


def test_registry_facts():
    assert list(ARMS) == ["base", "fewshot", "rag", "lora", "rag_lora", "scratch"]
    assert [a.name for a in ARMS.values() if a.retrieve] == ["rag", "rag_lora"]
    assert all(a.name.isidentifier() for a in ARMS.values())  # URL- and file-safe


@pytest.fixture
def runtime(settings, corpus):
    rt = Runtime(settings, corpus, {"questions": [Example("what is the price ?", "$249")]})
    rt.index()
    return rt


def test_base_fewshot_and_rag_answer_with_their_inputs(runtime):
    queries = [Query("what is the price ?"), Query("how much does the kestrel k2 cost ?")]
    base = answer(ARMS["base"], runtime, queries)
    few = answer(ARMS["fewshot"], runtime, queries)
    rag = answer(ARMS["rag"], runtime, queries, top_k=1)
    assert all(a.passages == () for a in base + few)
    assert [len(a.passages) for a in rag] == [1, 1]
    assert few[0].prompt_tokens > base[0].prompt_tokens and rag[0].prompt_tokens > base[0].prompt_tokens
    assert rag[0].retrieval_ms > 0 and base[0].retrieval_ms == 0


def test_same_inputs_same_answers(runtime):
    first = compare(runtime, "what is the price ?", parse_arms("base,rag"))
    second = compare(runtime, "what is the price ?", parse_arms("base,rag"))
    assert [(a.text, a.passages) for a in first] == [(a.text, a.passages) for a in second]


@pytest.mark.parametrize("arm", ["lora", "rag_lora", "scratch"])
def test_untrained_arms_name_the_command_that_trains_them(runtime, arm):
    with pytest.raises(ArtifactMissing, match=f"ragft train --corpus .* --arm {arm}"):
        answer(ARMS[arm], runtime, [Query("what is the price ?")])


def _save_lora(runtime, kind, base_model, nonzero):
    from peft import LoraConfig, get_peft_model

    gen = runtime.generator()
    peft_model = get_peft_model(gen.model, LoraConfig(r=2, lora_alpha=4, target_modules="all-linear"))
    if nonzero:
        torch.manual_seed(1)
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.data.normal_(0, 1.0)
    folder = runtime.artifact_folder(KINDS[kind])  # the adapter that answers questions
    peft_model.save_pretrained(folder)
    gen.model = peft_model.unload()  # back to the plain base model
    AdapterManifest(kind=kind, corpus=runtime.corpus.name, created_at="2026-01-01T00:00:00+00:00",
                    base_model=base_model, data_hash="-", fingerprint="-", hyperparameters={}, seed=0, examples={},
                    trainable_params=0, total_params=0, size_bytes=0, versions={}).write(folder)  # fmt: skip
    return folder


def test_trained_adapter_changes_answers_and_base_arm_stays_base(runtime):
    base_before = answer(ARMS["base"], runtime, [Query("what is the price ?")])
    _save_lora(runtime, "lora", runtime.generator().model_id, nonzero=True)
    lora = answer(ARMS["lora"], runtime, [Query("what is the price ?")])
    base_after = answer(ARMS["base"], runtime, [Query("what is the price ?")])
    assert base_after[0].text == base_before[0].text  # base runs with the adapter disabled
    assert lora[0].text != base_before[0].text


def test_fresh_adapter_that_changes_nothing_is_an_error(runtime):
    _save_lora(runtime, "lora", runtime.generator().model_id, nonzero=False)  # B starts at zero
    with pytest.raises(AdapterMismatch, match="does not change the model's output"):
        answer(ARMS["lora"], runtime, [Query("what is the price ?")])


def test_adapter_for_another_base_model_is_refused(runtime):
    _save_lora(runtime, "rag_lora", "someone/else", nonzero=True)
    with pytest.raises(AdapterMismatch, match="trained on base model 'someone/else'"):
        answer(ARMS["rag_lora"], runtime, [Query("what is the price ?")])


def test_the_ctranslate2_engine_answers_every_arm_as_transformers_does(runtime):
    """float32 CTranslate2 (the default engine) gives transformers' greedy answers, base and adapter arms alike."""
    from ragft.service.runtime import Runtime

    pytest.importorskip("ctranslate2")
    _save_lora(runtime, "lora", runtime.generator().model_id, nonzero=True)
    queries = [Query("what is the price ?"), Query("the k2 router")]
    fast = Runtime(runtime.settings.model_copy(update={"models": runtime.settings.models.model_copy(
        update={"engine": "ctranslate2", "compute_type": "float32"})}), runtime.corpus)  # fmt: skip
    assert fast.engine == "ctranslate2"
    for arm in ("base", "lora"):
        slow = [a.text for a in answer(ARMS[arm], runtime, queries)]
        assert [a.text for a in answer(ARMS[arm], fast, queries)] == slow, arm


def test_an_external_arm_stays_with_the_context_that_read_its_run():
    """`ragft score` runs registered their arms in the one global table: reading one made the live server list
    and answer as that arm, and iterating the table while a run was read could raise."""
    import contextvars

    from ragft.eval.spec import register_external_arms

    config = {"external_arms": {"vendor_bot": {"label": "vendor_bot", "retrieve": True}}}

    def read_a_scored_run() -> list[str]:
        register_external_arms(config)
        return list(ARMS)

    assert contextvars.copy_context().run(read_a_scored_run)[-1] == "vendor_bot"
    assert "vendor_bot" not in ARMS and list(ARMS) == ["base", "fewshot", "rag", "lora", "rag_lora", "scratch"]
    with pytest.raises(UnknownArm):
        parse_arm("vendor_bot")

    def register_while_iterating() -> int:
        seen = 0
        for _ in ARMS:  # a dict changed during iteration raised RuntimeError here
            register_external_arms({"external_arms": {f"system_{seen}": {}}})
            seen += 1
        return seen

    assert contextvars.copy_context().run(register_while_iterating) == len(ARMS)


def test_reading_a_scored_run_over_http_does_not_add_its_arm_to_the_server(stored_runs, tmp_path):
    import contextvars
    import json

    from fastapi.testclient import TestClient
    from ragft.eval.running.external import import_predictions
    from ragft.service.app.api.main import create_app

    settings, corpus = stored_runs.settings, stored_runs.corpus
    path = tmp_path / "vendor.jsonl"
    path.write_text("".join(json.dumps({"row_id": f"k{i}", "arm": "vendor_bot", "text": "It costs $1."}) + "\n"
                            for i in range(10)))  # fmt: skip
    # scored by `ragft score` in another process: nothing of it is registered in this one
    run_id = contextvars.copy_context().run(import_predictions, settings, corpus, path, "vendor")
    ARMS.pop("vendor_bot", None)  # as a fresh process would hold the table (an older ragft registered it globally)
    client = TestClient(create_app(settings, corpus))
    for _ in range(2):  # scored, then from the cache
        rows = client.get(f"/v1/results/{run_id}/rows", params={"arm": "vendor_bot"})
        assert rows.status_code == 200, rows.text
        assert {a["label"] for r in rows.json() for a in r["answers"]} == {"vendor_bot"}
        listed = {r["id"]: r for r in client.get("/v1/results").json()}
        assert listed[run_id]["planned_answers"] == 10  # its external arm's rows counted
    assert "vendor_bot" not in [m["id"] for m in client.get("/v1/models").json()["data"]]
    chat = {"model": "vendor_bot", "messages": [{"role": "user", "content": "what does the p1 cost ?"}]}
    assert client.post("/v1/chat/completions", json=chat).status_code == 404  # not the base model under its name
    assert "vendor_bot" not in ARMS
