from pathlib import Path

from ragft.eval.scoring.strata import row_stratum, strata_lines, stratum_blocks
from ragft.eval.tasks import TaskRow, load_tasks

ENTITYQ = Path(__file__).resolve().parents[1] / "corpora" / "entityq"


def _rows() -> dict[str, TaskRow]:
    rows = {}
    for i in range(40):
        doc_type = "manual" if i < 20 else "faq"
        rows[f"k{i}"] = TaskRow.model_validate({"id": f"k{i}", "family": "knowledge", "split": "test",
                                                "question": f"Question {i}?", "answers": ["A"],
                                                "tags": {"doc_type": doc_type}})  # fmt: skip
    return rows


def test_verdicts_by_an_arbitrary_named_field_with_holm_over_the_stratum_tests():
    rows = _rows()
    # rag answers every manual row and half the faq rows; lora no manual row and the same half of the faqs
    rag = {i: 1.0 if rows[i].tags["doc_type"] == "manual" or int(i[1:]) % 2 else 0.0 for i in rows}
    lora = {i: 0.0 if rows[i].tags["doc_type"] == "manual" else rag[i] for i in rows}
    values = {("rag", "answer_contained"): rag, ("lora", "answer_contained"): lora}
    families = {"knowledge": {"headline_metric": "answer_contained", "higher_is_better": True,
                              "arms": {"rag": {}, "lora": {}}}}  # fmt: skip
    out = stratum_blocks(families, values, rows, "doc_type", seed=0, margin=0.1)

    strata = out["knowledge"]["strata"]
    assert out["knowledge"]["field"] == "doc_type" and set(strata) == {"faq", "manual"}
    manual, faq = strata["manual"], strata["faq"]
    assert manual["rows"] == 20 and manual["arms"]["rag"]["value"] == 1.0 and manual["arms"]["lora"]["value"] == 0.0
    (c,) = manual["comparisons"]
    assert (c["a"], c["b"], c["difference"]) == ("rag", "lora", 1.0)
    assert c["significant"] and c["p_holm"] >= c["p_value"]  # adjusted over the two stratum tests
    assert manual["verdict"]["worse"] == ["lora"] and manual["verdict"]["status"] == "decided"
    assert faq["arms"]["rag"]["value"] == faq["arms"]["lora"]["value"] == 0.5
    assert faq["verdict"]["best"] == "rag" and faq["verdict"]["worse"] == []  # a tie: the cheaper arm, nobody worse

    lines = strata_lines({"arms": {"rag": {"label": "RAG"}, "lora": {"label": "LoRA"}}, "strata": out})
    assert len(lines) == 2 and any("doc_type = manual" in line and "RAG minus LoRA +1.000" in line for line in lines)


def test_a_field_no_row_varies_on_gives_no_breakdown_and_row_fields_are_read_too():
    rows = _rows()
    values = {("rag", "answer_contained"): dict.fromkeys(rows, 1.0)}
    families = {"knowledge": {"headline_metric": "answer_contained", "higher_is_better": True, "arms": {"rag": {}}}}
    assert stratum_blocks(families, values, rows, "region", seed=0, margin=0.1) == {}
    assert stratum_blocks(families, values, rows, "family", seed=0, margin=0.1) == {}  # one value only
    row = TaskRow.model_validate({"id": "k", "family": "knowledge", "split": "test", "question": "Q?",
                                  "answers": ["A"], "popularity": 812, "stratum": "low"})  # fmt: skip
    assert (row_stratum(row, "stratum"), row_stratum(row, "popularity")) == ("low", "812")
    assert row_stratum(row, "kind") is None


def test_the_real_data_corpus_labels_every_knowledge_row_with_its_popularity():
    rows = [r for r in load_tasks(ENTITYQ) if r.family == "knowledge"]
    assert sum(r.split == "test" for r in rows) >= 150
    assert all(r.popularity is not None and r.stratum in {"low", "mid", "high"} for r in rows)
    assert {r.stratum for r in rows if r.split == "test"} == {"low", "mid", "high"}


def test_a_stratum_where_no_arm_beats_the_baseline_recommends_nothing():
    """The pooled verdict's rule holds in every stratum: a stratum where the leader is not significantly above the
    chance baseline on that stratum's rows says so, however much better than the other arms it is."""
    rows = _rows()
    rag = {i: 1.0 if rows[i].tags["doc_type"] == "manual" else 0.0 for i in rows}
    values = {("rag", "answer_contained"): rag, ("lora", "answer_contained"): dict.fromkeys(rows, 0.0)}
    chance = {i: 1.0 if rows[i].tags["doc_type"] == "faq" else 0.0 for i in rows}  # a guess right on every faq row
    families = {"knowledge": {"headline_metric": "answer_contained", "higher_is_better": True,
                              "arms": {"rag": {}, "lora": {}}, "baseline_reference": "chance"}}  # fmt: skip
    out = stratum_blocks(families, values, rows, "doc_type", seed=0, margin=0.1, references={"knowledge": chance})
    manual, faq = out["knowledge"]["strata"]["manual"], out["knowledge"]["strata"]["faq"]
    assert manual["verdict"]["recommended"] == "rag" and manual["baseline"]["value"] == 0.0
    # on faq rows both arms fail and the guess is always right: "use LoRA" (the tie's cheapest) would be forced
    assert faq["baseline"]["value"] == 1.0 and faq["verdict"]["recommended"] is None
    assert faq["verdict"]["status"] == "no arm beats the baseline"
    assert any("chance 1.000" in line for line in strata_lines({"arms": {}, "strata": out}))
