"""Adding an arm or a family is one entry: every entry point picks it up with no other edit.

These tests register an arm and a family at run time (as a one-line change to `service/arms.py` or
`eval/families.py` would) and drive the real CLI, HTTP API, runner, results and report with the tiny models.
"""

import json

import pytest
from fastapi.testclient import TestClient
from ragft.eval import families as family_registry
from ragft.eval.families import Family
from ragft.eval.scoring.metrics import METRICS, Metric
from ragft.service.app.api.main import create_app
from ragft.service.arms import ARMS, Arm

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

    from ragft.eval.scoring.verdict import decide

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


def _supported_answer(row, pred, ctx) -> float | None:
    """Right only if the reply holds an accepted answer that the row's documents state (gold contexts)."""
    gold = ctx.gold_contexts.get(row.id)
    if not gold:
        return None
    stated = [a for a in row.answers if any(a.lower() in g.lower() for g in gold)]
    return float(any(a.lower() in pred.text.lower() for a in stated))


def _answers_row(row) -> None:
    if not (row.answers and row.source_docs):
        raise ValueError("a policy row needs 'answers' and 'source_docs'")


def _json_row(row) -> None:
    if row.json_schema is None or row.expected is None:
        raise ValueError("an extract row needs 'schema' and 'expected'")


def _json_equal(row, pred, ctx) -> float:
    from ragft.eval.scoring.metrics.behaviour import parse_json

    return float(parse_json(pred.text) == row.expected)


SCHEMA = {"type": "object", "properties": {"product": {"type": "string"}}, "required": ["product"]}
NEW_FAMILIES = {
    "policy": (
        Family("policy", "Policy answers", "supported_answer", _answers_row, trains=True, factual=True, grounded=True,
               max_new_tokens=8),
        Metric("supported_answer", "policy", ("policy",), _supported_answer, "an answer its documents state"),
        [{"id": "p1", "family": "policy", "split": "train", "question": "What does a Kestrel K2 cost?",
          "answers": ["$249"], "source_docs": ["kestrel-k2"]},
         {"id": "p2", "family": "policy", "split": "test", "question": "What is the weight of the Kestrel K2?",
          "answers": ["300 grams"], "source_docs": ["kestrel-k2"]},
         {"id": "p3", "family": "policy", "split": "test", "question": "Which version is the K4 firmware?",
          "answers": ["1.2.3"], "source_docs": ["kestrel-k4"]},
         {"id": "p4", "family": "policy", "split": "test", "question": "How long does the camera charge?",
          "answers": ["3 hours"], "source_docs": ["camera"]}],  # p4's answer is in no document
    ),
    "extract": (
        Family("extract", "Extraction", "json_equal", _json_row, trains=True, formats=True,
               adapter_group="extract"),
        Metric("json_equal", "extract", ("extract",), _json_equal, "the reply's JSON equals the expected object"),
        [{"id": f"e{i}", "family": "extract", "split": split, "input": text, "kind": "product",
          "instruction": "Reply with JSON.", "schema": SCHEMA, "expected": {"product": product}}
         for i, (split, text, product) in enumerate([("train", "the k2 router is broken", "k2"),
                                                       ("test", "my camera battery died", "camera"),
                                                       ("test", "the k4 firmware is old", "k4")])],
    ),
}  # fmt: skip


@pytest.fixture
def new_families(monkeypatch, full_corpus):
    """Two families registered at run time, each as one registration and its metric, with rows in the corpus:
    one scores answers against the documents, one scores JSON."""
    for family, metric, rows in NEW_FAMILIES.values():
        monkeypatch.setitem(family_registry.FAMILIES, family.name, family)
        monkeypatch.setitem(METRICS, metric.name, metric)
        with (full_corpus / "tasks" / f"{family.name}.jsonl").open("w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    return full_corpus


def test_families_with_their_own_metrics_need_no_edit_outside_their_registration(new_families, ragft):
    from ragft.eval.tasks import corpus_examples, supervised_rows

    settings, run = ragft
    corpus = new_families
    assert run("corpus", "validate", corpus).exit_code == 0
    audit = run("corpus", "audit", corpus).output
    assert "p4: '3 hours' not in camera" in audit  # a grounded family's answers are checked against its documents
    assert "extract:product" in audit  # a format family is audited per format

    pools = corpus_examples(corpus, settings.generation)
    assert "What does a Kestrel K2 cost?" in [e.question for e in pools["questions"]]  # questions share one pool
    assert [e.question for e in pools["extract:product"]] == ["the k2 router is broken"]  # JSON sees JSON
    from ragft.eval.tasks import load_tasks

    trained = {r.row_id: r for r in supervised_rows(load_tasks(corpus), "I don't know.")}
    assert trained["p1"].grounded and not trained["e0"].grounded
    assert json.loads(trained["e0"].target) == {"product": "k2"}

    out = run("eval", "--corpus", corpus, "--families", "policy,extract", "--arms", "base,fewshot,rag,lora,rag+lora")
    assert out.exit_code == 0, out.output
    results = _results(settings, out.stdout)
    policy, extract = results["families"]["policy"], results["families"]["extract"]
    # gold contexts came from the documents: the two rows whose answers a document states are scored, p4 is not
    assert {a: f["supported_answer"]["n"] for a, f in policy["arms"].items()} == dict.fromkeys(
        ["base", "fewshot", "rag", "lora", "rag_lora"], 2
    )
    assert {a: f["json_equal"]["n"] for a, f in extract["arms"].items()} == dict.fromkeys(
        ["base", "fewshot", "rag", "lora", "rag_lora"], 2
    )
    groups = results["data"]["adapters"]["lora"]["groups"]
    assert {"questions", "extract"} <= set(groups)  # each family's adapter group trained from its own rows


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
