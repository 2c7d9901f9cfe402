"""Two stored runs built from constructed answers (no training, no generation): what the row views, the compare
command, reviews, the results routes and the browser tests read (the `stored_runs` fixture, which
tests/conftest.py imports)."""

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from ragft.eval.spec import RunSpec
from ragft.eval.store import Prediction, Store, StoredPassage
from ragft.service.settings import Settings

PRICES = [463, 118, 239, 871, 95, 1234, 307, 52, 640, 799]
SCRIPT = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2"> It costs $1.'


@dataclass(frozen=True)
class StoredRuns:
    settings: Settings
    corpus: Path
    a: str  # base right on every price, rag on half
    b: str  # base wrong on every price (one answer holds a <script>), rag right on all: base regressed


def _answers(base_right, rag_right, phrase: str) -> dict[tuple[str, str], str]:
    out = {}
    for i, price in enumerate(PRICES):
        out[("base", f"k{i}")] = f"It costs ${price:,}." if base_right(i) else "It costs $1."
        out[("rag", f"k{i}")] = f"It costs ${price:,}." if rag_right(i) else "It costs $2."
        out[("base", f"a{i}")] = phrase
        out[("rag", f"a{i}")] = phrase if i % 2 else "It weighs 3 kg."
    return out


def store_run(settings: Settings, corpus: Path, run_id: str, answers: dict[tuple[str, str], str]) -> None:
    """A finished run of arms base and rag over the priced corpus, with these answers, as the runner stores one."""
    spec = RunSpec(corpus=corpus, arms=["base", "rag"], families=["knowledge", "knowledge_unseen", "abstention"])
    store = Store(settings.database)
    try:
        store.create_run(run_id, corpus.name, {"spec": spec.model_dump(mode="json"), "settings": settings.recorded()})
        store.update_meta(run_id, rows={"knowledge": [f"k{i}" for i in range(10)],
                                        "abstention": [f"a{i}" for i in range(10)]})  # fmt: skip
        predictions = []
        for (arm, row_id), text in answers.items():
            i = int(row_id[1:])
            source = f"# Product P{i}\n\nThe P{i} costs ${PRICES[i]:,}."
            passages = (StoredPassage(f"p{i}-0", f"p{i}", source, "p. 4" if i == 0 else None),)  # p0: a paged document
            rag = arm == "rag"
            predictions.append(Prediction(arm, row_id, "main", text, passages if rag else (), 40, 8,
                                          400.0 if rag else 100.0, 5.0 if rag else 0.0, 1))  # fmt: skip
        store.add_predictions(run_id, predictions)
        store.set_status(run_id, "done")
    finally:
        store.close()


@pytest.fixture
def stored_runs(settings, tmp_path) -> StoredRuns:
    """Ten products with a price each (ten knowledge rows, ten unanswerable weight questions) and two published
    runs of base and rag; reports under tmp_path."""
    from ragft.eval.reporting.report import publish_run

    corpus = tmp_path / "priced"
    (corpus / "documents").mkdir(parents=True)
    (corpus / "tasks").mkdir()
    rows = []
    for i, price in enumerate(PRICES):
        (corpus / "documents" / f"p{i}.md").write_text(f"# Product P{i}\n\nThe P{i} costs ${price:,}.\n")
        rows.append({"id": f"k{i}", "family": "knowledge", "split": "test", "question": f"What does the P{i} cost?",
                     "answers": [f"${price:,}"], "source_docs": [f"p{i}"], "kind": "unseen"})  # fmt: skip
        rows.append({"id": f"a{i}", "family": "abstention", "split": "test", "question": f"What does the P{i} weigh?"})
    (corpus / "tasks" / "tasks.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    settings = settings.model_copy(update={
        "corpus": corpus, "eval": settings.eval.model_copy(update={"reports_dir": tmp_path / "reports"}),
    })  # fmt: skip
    phrase = settings.generation.abstention_phrase
    store_run(settings, corpus, "priced-a", _answers(lambda i: True, lambda i: i >= 5, phrase))
    later = _answers(lambda i: False, lambda i: True, phrase)
    later[("base", "k0")] = SCRIPT
    store_run(settings, corpus, "priced-b", later)
    for run_id in ("priced-a", "priced-b"):
        publish_run(settings, run_id, embed=lambda texts: [[1.0, 0.0] for _ in texts])
    return StoredRuns(settings, corpus, "priced-a", "priced-b")
