import pytest
from ragft.eval.scoring.results import judge_agreement


def test_judge_agreement_is_cohens_kappa_on_the_same_answers():
    string = {"r1": 1.0, "r2": 1.0, "r3": 0.0, "r4": 0.0, "r5": 1.0, "r6": 0.0}
    judge = {"r1": 0.9, "r2": 0.8, "r3": 0.1, "r4": 0.2, "r5": 0.3, "r6": 0.7}  # disagrees on r5 and r6
    values = {("rag", "answer_contained"): string, ("rag", "judge_answer_correctness"): judge}
    a = judge_agreement(values)["knowledge"]
    assert a["pairs"] == 6 and a["agreement"] == round(4 / 6, 4)
    # kappa = (po - pe) / (1 - pe) with po = 4/6 and pe = 0.5: 1/3
    assert abs(a["cohens_kappa"] - 1 / 3) < 1e-3
    assert judge_agreement({("rag", "answer_contained"): string}) == {}  # no judge, no agreement figure


def _knowledge_rows(n: int = 60):
    from ragft.eval.tasks import TaskRow

    return {f"k{i}": TaskRow.model_validate({"id": f"k{i}", "family": "knowledge", "split": "test",
                                             "question": f"What does the P{i} cost?", "answers": ["$1"],
                                             "source_docs": [f"d{i // 3}"]}) for i in range(n)}  # fmt: skip


def test_a_family_verdict_never_depends_on_another_familys_rows():
    """Issue #33 item 4: Holm spanned the report, so freshness flipped when another family's p-values moved."""
    import numpy as np
    from ragft.eval.scoring.baseline import Baseline
    from ragft.eval.scoring.results import _family_block

    rows = _knowledge_rows()
    rng = np.random.default_rng(0)
    values = {("base", "answer_contained"): {i: 0.0 for i in rows},
              ("rag", "answer_contained"): {i: float(rng.random() < 0.5) for i in rows},
              ("rag", "behaviour_pass"): {f"b{i}": 1.0 for i in range(30)},
              ("base", "behaviour_pass"): {f"b{i}": 0.0 for i in range(30)}}  # fmt: skip
    chance = Baseline("knowledge", {i: 0.0 for i in rows}, "'$1'", raw={i: 0.0 for i in rows})
    block, _ = _family_block("knowledge", values, ["base", "rag"], rows, 0, 0.1, {}, chance)
    changed = values | {("rag", "behaviour_pass"): {f"b{i}": 0.0 for i in range(30)},
                        ("base", "behaviour_pass"): {f"b{i}": float(i % 2) for i in range(30)}}  # fmt: skip
    again, _ = _family_block("knowledge", changed, ["base", "rag"], rows, 0, 0.1, {}, chance)
    assert block["verdict"] == again["verdict"] and block["pairs"] == again["pairs"]
    assert block["verdict"]["status"] == "decided" and block["verdict"]["recommended"] == "rag"
    (pair,) = block["pairs"]
    assert pair["test"] == "cluster-sign-flip" and pair["p_holm"] == pair["p_value"]  # rows share documents
    assert block["power"]["tests"] == ["cluster-sign-flip"]
    assert block["single_seed"] == []  # neither arm trains


def test_a_trained_arm_with_one_seed_is_flagged_and_k_seeds_reach_the_test():
    import numpy as np
    from ragft.eval.scoring.baseline import Baseline
    from ragft.eval.scoring.results import _family_block

    rows = _knowledge_rows(30)
    rng = np.random.default_rng(1)
    seeds = [[float(rng.random() < p) for _ in rows] for p in (0.2, 0.5, 0.8)]
    ids = sorted(rows)
    values = {("base", "answer_contained"): {i: 0.0 for i in rows},
              ("lora", "answer_contained"): {i: float(np.mean([s[k] for s in seeds])) for k, i in enumerate(ids)}}  # fmt: skip
    chance = Baseline("knowledge", {i: 0.0 for i in rows}, "'$1'", raw={i: 0.0 for i in rows})
    once, _ = _family_block("knowledge", values, ["base", "lora"], rows, 0, 0.1, {}, chance)
    assert once["single_seed"] == ["lora"]
    thrice, _ = _family_block("knowledge", values, ["base", "lora"], rows, 0, 0.1,
                              {("lora", "answer_contained"): seeds}, chance)  # fmt: skip
    assert thrice["single_seed"] == [] and thrice["pairs"][0]["test"] == "seed-and-cluster-bootstrap (k=3)"


def test_results_written_by_schema_3_still_render():
    from ragft.eval.reporting.report import render_markdown, verdict_rows

    old = {"run_id": "old", "corpus": "c", "status": "done", "models": {"generator": "g"}, "judge": {"used": False},
           "arms": {"base": {"label": "Base"}, "rag": {"label": "RAG"}}, "costs": {}, "data": {}, "schema_version": 3,
           "families": {"knowledge": {
               "headline_metric": "answer_contained", "higher_is_better": True,
               "arms": {"base": {"answer_contained": {"value": 0.1, "ci_low": 0.0, "ci_high": 0.3, "n": 10}},
                        "rag": {"answer_contained": {"value": 0.8, "ci_low": 0.5, "ci_high": 0.9, "n": 10}}},
               "comparisons": [{"a": "rag", "b": "base", "n": 10, "difference": 0.7, "ci_low": 0.3, "ci_high": 0.9,
                                "p_value": 0.004, "p_holm": 0.02, "test": "mcnemar-exact",
                                "non_inferiority_p_holm": 1.0}],
               "power": {"rows": 10, "mdd": 0.6},
               "verdict": {"best": "rag", "worse": ["base"], "non_inferior": [], "undecided": [],
                           "recommended": "rag", "status": "decided", "reason": "RAG scores highest", "rule": "agrees",
                           "rule_statement": "agrees", "margin": 0.1}}}}  # fmt: skip
    (row,) = verdict_rows(old)
    assert row["recommended"] == "RAG"
    md = render_markdown(old)
    assert "Holm p=0.020" in md and "non-inferiority p" in md


def test_the_report_names_the_tests_it_ran_and_warns_of_one_training_seed():
    import numpy as np
    from ragft.eval.reporting.report import render_html, render_markdown
    from ragft.eval.scoring.baseline import Baseline
    from ragft.eval.scoring.results import SCHEMA_VERSION, _family_block

    rows = _knowledge_rows()
    rng = np.random.default_rng(3)
    values = {("base", "answer_contained"): {i: 0.0 for i in rows},
              ("lora", "answer_contained"): {i: float(rng.random() < 0.3) for i in rows},
              ("rag", "answer_contained"): {i: float(rng.random() < 0.6) for i in rows}}  # fmt: skip
    chance = Baseline("knowledge", {i: float(rng.random() < 0.05) for i in rows}, "'$1'", raw={})
    block, _ = _family_block("knowledge", values, ["base", "rag", "lora"], rows, 0, 0.1, {}, chance)
    results = {"run_id": "new", "corpus": "c", "status": "done", "models": {"generator": "g", "embedder": "e"},
               "judge": {"used": False}, "arms": {"base": {"label": "Base"}, "rag": {"label": "RAG"},
                                                  "lora": {"label": "LoRA"}},
               "costs": {}, "data": {"rows": {}}, "schema_version": SCHEMA_VERSION, "families": {"knowledge": block},
               "failures": {}, "versions": {}}  # fmt: skip
    md = render_markdown(results)
    assert "cluster sign-flip test" in md and "exact McNemar" not in md.split("How to read this.")[1].split("(")[0]
    assert "one-sided at 5%" in md and "knowledge 3" in md  # Holm over the family's 3 pairwise tests
    assert "Every pair of arms (Holm over this family's 3 tests)" in md
    assert "rests on one training seed: LoRA trained once" in md
    assert block["verdict"]["recommended"] == "rag" and "| decided | above chance | **RAG** |" in md
    # the best arm against each other arm, oriented best minus other, with the other arm's margin test
    assert all(c["a"] == "rag" and c["difference"] >= 0 and "non_inferiority_p_adjusted" in c and "a_within" not in c
               for c in block["comparisons"]) and len(block["comparisons"]) == 2  # fmt: skip
    assert "rests on one training seed" in render_html(results)


def test_a_margin_set_as_a_share_of_the_lead_over_chance_reaches_the_verdict():
    from ragft.eval.scoring.baseline import Baseline
    from ragft.eval.scoring.results import _family_block

    rows = _knowledge_rows(40)
    ids = sorted(rows)
    values = {("base", "answer_contained"): {i: 0.0 for i in rows},
              ("rag", "answer_contained"): {i: float(k % 2) for k, i in enumerate(ids)}}  # fmt: skip
    chance = Baseline("knowledge", {i: 0.0 for i in rows}, "'$1'", raw={})
    block, _ = _family_block("knowledge", values, ["base", "rag"], rows, 0, 0.1, {}, chance, margin_share=0.4)
    assert block["margin"] == {"value": 0.2, "set_by": "0.4 of the best arm's lead over chance (0.500)"}
    assert block["verdict"]["margin"] == 0.2


def test_a_stored_run_publishes_results_the_report_reads(stored_runs):
    """The whole path from stored answers to results.json and both reports (build_results, strata, the report)."""
    import json

    folder = stored_runs.settings.eval.reports_dir / stored_runs.a
    results = json.loads((folder / "results.json").read_text())
    assert results["schema_version"] == 4
    for family, block in results["families"].items():
        v = block["verdict"]
        assert v["status"] in ("decided", "insufficient evidence", "no arm beats the baseline", "compared with base")
        assert {"relative", "above_chance", "candidates"} <= set(v) and block["pairs"], family
        assert all(p["p_holm"] >= p["p_value"] for p in block["pairs"])
        assert block["power"]["tests"] and block["margin"]["set_by"].startswith("flat")
    md = (folder / "report.md").read_text()
    assert "How to read this." in md and "one-sided at 5%" in md and "Every pair of arms" in md
    html = (folder / "report.html").read_text()
    assert "How to read this." in html
    abstention = results["families"]["abstention"]
    from ragft.eval.scoring.metrics import METRICS

    top = METRICS[abstention["headline_metric"]]
    low, high = top.figure_range
    assert abstention["margin"]["value"] == round(0.1 * (high - low), 4)  # the margin is a share of the scale
    if top.note:
        assert top.note in md and top.note in html.replace("&#39;", "'")  # the headline's note under its family


def test_a_balanced_metrics_interval_stays_on_its_scale():
    """Abstention's halves weigh the same: its interval bootstraps the mean of the two halves' means, not the
    reweighted row values (whose resampled means ran past -1 for an arm that never abstains)."""
    from ragft.eval.scoring.metrics import METRICS
    from ragft.eval.scoring.results import _balanced_interval
    from ragft.eval.tasks import TaskRow

    metric = METRICS["effective_reliability"]
    rows = {f"a{i}": TaskRow(id=f"a{i}", family="abstention", split="test", question=f"Who made X{i}?")
            for i in range(30)}  # fmt: skip
    rows |= {f"k{i}": TaskRow(id=f"k{i}", family="knowledge", split="test", question=f"Price of Y{i}?",
                              answers=["$1"], source_docs=[f"d{i}"]) for i in range(150)}  # fmt: skip
    raw = {**{f"a{i}": -1.0 for i in range(30)}, **{f"k{i}": (1.0 if i < 3 else -1.0) for i in range(150)}}
    weighted = {i: v * len(raw) / (2 * (30 if i.startswith("a") else 150)) for i, v in raw.items()}
    ci = _balanced_interval(metric, weighted, sorted(weighted), rows, seed=0)
    assert ci.value == pytest.approx((-1.0 + (3 - 147) / 150) / 2)
    assert -1.0 <= ci.ci_low <= ci.value <= ci.ci_high <= 0.5


def test_a_failures_passages_cite_their_page_in_results_and_the_html_report(stored_runs):
    from ragft.eval.reporting.report import render_html
    from ragft.eval.scoring.results import build_results
    from ragft.eval.store import Store

    store = Store(stored_runs.settings.database)
    try:
        results = build_results(store, stored_runs.a, stored_runs.settings)
    finally:
        store.close()
    cited = [p for f in results["failures"].get("rag", []) for p in f["passages"] if p["doc_id"] == "p0"]
    assert cited and cited[0]["page"] == "p. 4"
    assert "p0, p. 4</b>" in render_html(results)
