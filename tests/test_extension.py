"""Adding an arm or a family is one entry: every entry point picks it up with no other edit.

These tests register an arm and a family at run time (as a one-line change to `service/arms.py` or
`eval/families.py` would) and drive the real CLI, HTTP API, runner, results and report with the tiny models.
"""

import json

import pytest
from fastapi.testclient import TestClient

from eval import families as family_registry
from eval.families import Family
from eval.metrics import METRICS, Metric
from service.app.api.main import create_app
from service.arms import ARMS, Arm

FEWSHOT_RAG = Arm("fewshot_rag", "Few-shot RAG", retrieve=True, fewshot=True, adapter=None,
                  summary="retrieved passages and worked examples", cost_rank=25)  # fmt: skip


@pytest.fixture
def with_fewshot_rag(monkeypatch):
    monkeypatch.setitem(ARMS, FEWSHOT_RAG.name, FEWSHOT_RAG)
    return FEWSHOT_RAG


def _results(settings, output: str) -> dict:
    run_id = output.split("Verdict for run ")[1].split()[0]
    return json.loads((settings.eval.reports_dir / run_id / "results.json").read_text())


def test_an_arm_that_recombines_facts_is_one_line(with_fewshot_rag, ragft, full_corpus):
    settings, run = ragft
    assert run("index", full_corpus).exit_code == 0
    asked = run("query", "what does the kestrel k2 cost ?", "--arms", "fewshot_rag", "--corpus", full_corpus, "--json")
    assert asked.exit_code == 0, asked.output
    answer = json.loads(asked.stdout)[0]
    assert answer["arm"] == "fewshot_rag" and answer["passages"]  # it retrieved

    out = run("eval", "--corpus", full_corpus, "--families", "knowledge,general")  # default arm list: every arm
    assert out.exit_code == 0, out.output
    results = _results(settings, out.stdout)
    assert results["config"]["spec"]["arms"][-1] == "fewshot_rag"
    knowledge = results["families"]["knowledge"]
    assert "fewshot_rag" in knowledge["arms"] and "recall_at_k" in knowledge["arms"]["fewshot_rag"]
    assert "fewshot_rag" not in results["families"]["general"]["arms"]  # base weights: asked no forgetting probe
    assert "fewshot_rag" in results["costs"]
    run_id = out.stdout.split("Verdict for run ")[1].split()[0]
    md = (settings.eval.reports_dir / run_id / "report.md").read_text()
    assert "Few-shot RAG" in md

    from eval.verdict import decide

    verdict = decide("knowledge", {"base": 0.1, "fewshot_rag": 0.9}, {"base": "worse"}, margin=0.1)
    assert verdict.rule == "agrees"  # it retrieves, so the folk rule favours it by its facts


def test_an_added_arm_is_accepted_over_http(with_fewshot_rag, settings, full_corpus):
    with TestClient(create_app(settings, full_corpus)) as client:
        client.app.state.runtime.index()
        r = client.post("/v1/query", json={"question": "what does the kestrel k2 cost ?", "arms": ["fewshot_rag"]})
        assert r.status_code == 200, r.text
        assert r.json()["answers"][0]["arm"] == "fewshot_rag"
        run = client.post("/v1/runs", json={"arms": ["fewshot_rag"], "families": ["knowledge"]})
        assert run.status_code == 202 and run.json()["request"]["arms"] == ["fewshot_rag"]
        schema = client.get("/openapi.json").json()["components"]["schemas"]
        assert "fewshot_rag" in schema["QueryRequest"]["properties"]["arms"]["items"]["enum"]


def _ends_with_question_mark(row, pred, ctx) -> float:
    return float(pred.text.strip().endswith("?"))


@pytest.fixture
def toy_family(monkeypatch, full_corpus):
    """A family registered at run time, with its one metric and two rows in the corpus."""
    family = Family("echo", "Echo", "echo_question", lambda row: None)
    monkeypatch.setitem(family_registry.FAMILIES, family.name, family)
    monkeypatch.setitem(
        METRICS, "echo_question", Metric("echo_question", "echo", ("echo",), _ends_with_question_mark, "ends with ?")
    )
    rows = [{"id": "e1", "family": "echo", "split": "test", "question": "Repeat: is the K2 a router?"},
            {"id": "e2", "family": "echo", "split": "test", "question": "Repeat: what is a dock?"}]  # fmt: skip
    with (full_corpus / "tasks" / "echo.jsonl").open("w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return family


def test_a_family_is_one_entry_and_its_metric_module(toy_family, ragft, full_corpus):
    settings, run = ragft
    assert run("corpus", "validate", full_corpus).exit_code == 0
    out = run("eval", "--corpus", full_corpus, "--families", "echo", "--arms", "base,rag")
    assert out.exit_code == 0, out.output
    block = _results(settings, out.stdout)["families"]["echo"]
    assert block["headline_metric"] == "echo_question"
    assert set(block["arms"]) == {"base", "rag"} and block["arms"]["base"]["echo_question"]["n"] == 2
    assert block["verdict"]["rule"] == "n/a"


def test_train_force_retrains_an_identical_artifact(ragft, full_corpus):
    _, run = ragft
    first = run("train", "--corpus", full_corpus, "--arm", "lora")
    assert first.exit_code == 0 and first.stdout.startswith("trained lora/"), first.output
    again = run("train", "--corpus", full_corpus, "--arm", "lora")
    assert again.stdout.startswith("reused lora/") and "trained" not in again.stdout
    forced = run("train", "--corpus", full_corpus, "--arm", "lora", "--force")
    assert forced.exit_code == 0 and forced.stdout.startswith("trained lora/"), forced.output
    assert "reused" not in forced.stdout


def test_fewshot_without_tasks_says_what_to_add(ragft, tmp_path):
    _, run = ragft
    docs = tmp_path / "bare" / "documents"
    docs.mkdir(parents=True)
    (docs / "a.md").write_text("The K2 costs $249.")
    out = run("query", "what does the K2 cost ?", "--arms", "fewshot", "--corpus", tmp_path / "bare")
    assert out.exit_code == 2 and "tasks/" in out.output and "fewshot" in out.output
