"""eval/reporting/answers.py: every arm's answer per row, the browser's filters, and the rows two runs changed."""

from ragft.eval.reporting.answers import RowFilter, filter_rows, highlight, outcome_changes, row_views, score_run
from ragft.eval.store import Store

from tests.stored_runs import SCRIPT


def views(runs, run_id):
    store = Store(runs.settings.database)
    try:
        return row_views(score_run(store, run_id, runs.settings))
    finally:
        store.close()


def test_rows_carry_every_arms_answer_and_mark_as_the_report_scored_them(stored_runs):
    a = {v.id: v for v in views(stored_runs, stored_runs.a)}
    assert len(a) == 20 and set(a["k0"].answers) == {"base", "rag"}
    k0 = a["k0"]
    assert k0.families == ("knowledge", "knowledge_unseen", "abstention") and k0.accepted == ("$463",)
    assert (k0.answers["base"].outcome, k0.answers["rag"].outcome) == ("correct", "wrong")
    assert k0.answers["base"].scores["answer_contained"] == 1.0 and k0.answers["rag"].passages
    assert a["a1"].answers["base"].abstained and a["a1"].answers["base"].outcome == "correct"
    assert not a["a0"].answers["rag"].abstained and a["a0"].answers["rag"].outcome == "wrong"


def test_filters_narrow_rows_and_arms(stored_runs):
    a = views(stored_runs, stored_runs.a)
    ids = lambda **f: [v.id for v in filter_rows(a, RowFilter(**f))]  # noqa: E731
    # rag is wrong on k0-k4 and on the even weight questions, where base abstains rightly
    assert ids(disagree=True) == ["a0", "a2", "a4", "a6", "a8", "k0", "k1", "k2", "k3", "k4"]
    assert ids(wrong="rag", family="knowledge") == ["k0", "k1", "k2", "k3", "k4"]
    assert ids(wrong="base") == [] and ids(all_wrong=True) == []
    assert ids(family="abstention", arm="rag", abstained=True) == ["a1", "a3", "a5", "a7", "a9"]
    assert ids(q="P3 ") == ["a3", "k3"]
    only_rag = filter_rows(a, RowFilter(arm="rag", disagree=True))  # disagreement reads every arm, rag is shown
    assert len(only_rag) == 10 and all(set(v.answers) == {"rag"} for v in only_rag)
    b = views(stored_runs, stored_runs.b)
    assert [v.id for v in filter_rows(b, RowFilter(q="<script>"))] == ["k0"]
    assert filter_rows(b, RowFilter(q="<script>"))[0].answers["base"].text == SCRIPT


def test_outcome_changes_are_fixed_and_broken_rows_per_arm_broken_first(stored_runs):
    changes = outcome_changes(views(stored_runs, stored_runs.a), views(stored_runs, stored_runs.b))
    assert [(c.change, c.row.id) for c in changes["rag"]] == [("fixed", f"k{i}") for i in range(5)]
    assert [c.change for c in changes["base"]] == ["broke"] * 10
    assert changes["base"][0].before.text == "It costs $463." and changes["base"][0].after.text == SCRIPT


def test_highlight_marks_every_accepted_answer_case_insensitively():
    assert highlight("The K4 costs $199, not $1990.", ("$199",)) == [
        ("The K4 costs ", False), ("$199", True), (", not ", False), ("$199", True), ("0.", False)]  # fmt: skip
    assert highlight("Twelve HOURS", ("hours", "")) == [("Twelve ", False), ("HOURS", True)]
    assert highlight("nothing", ()) == [("nothing", False)]
