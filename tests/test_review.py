"""eval/reporting/review.py: reviewers' marks kept apart from measured scores, and the reviewed report that uses them."""

import json

import pytest
from ragft.eval.reporting.review import Reviews, publish_reviewed


def test_marks_replace_each_other_and_clear_and_name_the_reviewer(stored_runs):
    reviews = Reviews(stored_runs.settings.database)
    try:
        reviews.mark("priced-b", "base", "k1", correct=False, reviewer="  Ada   Lovelace ")
        mark = reviews.mark("priced-b", "base", "k1", correct=True, reviewer="Ada Lovelace")
        assert (mark.correct, mark.reviewer) == (True, "Ada Lovelace") and len(reviews.for_run("priced-b")) == 1
        with pytest.raises(ValueError, match="reviewer"):
            reviews.mark("priced-b", "base", "k2", correct=True, reviewer="   ")
        reviews.clear("priced-b", "base", "k1")
        assert reviews.for_run("priced-b") == {}
    finally:
        reviews.close()


def test_the_reviewed_report_uses_marks_and_the_measured_one_stays(stored_runs):
    settings = stored_runs.settings
    measured_path = settings.eval.reports_dir / "priced-b" / "results.json"
    measured = measured_path.read_text()
    reviews = Reviews(settings.database)
    for i in range(4):  # base's four answers "It costs $1." judged right by a reviewer (say, a currency mix-up)
        reviews.mark("priced-b", "base", f"k{i + 1}", correct=True, reviewer="Ada" if i < 3 else "Grace")
    reviews.close()
    results, folder = publish_reviewed(settings, "priced-b", embed=lambda texts: [[1.0, 0.0] for _ in texts])
    assert folder == settings.eval.reports_dir / "reviewed" / "priced-b"
    assert results["review"] | {"measured_report": None} == {
        "answers_overridden": 4, "rows_overridden": 4, "right": 4, "wrong": 0, "by": {"Ada": 3, "Grace": 1},
        "measured_report": None}  # fmt: skip
    assert results["families"]["knowledge"]["arms"]["base"]["answer_contained"]["value"] == 0.4
    assert (
        "Reviewed: 4 answer(s) on 4 row(s) overridden (4 marked right, 0 wrong) by Ada (3), Grace (1)"
        in (folder / "report.md").read_text()
    )
    assert "Ada (3), Grace (1)" in (folder / "report.html").read_text()
    assert measured_path.read_text() == measured  # measured results untouched
    measured_report = (folder / results["review"]["measured_report"]).resolve()  # relative: no server path in it
    assert measured_report == (settings.eval.reports_dir / "priced-b" / "report.html").resolve()
    assert str(settings.eval.reports_dir) not in json.dumps(json.loads((folder / "results.json").read_text())["review"])
    assert json.loads(measured)["families"]["knowledge"]["arms"]["base"]["answer_contained"]["value"] == 0.0


def test_report_with_overrides_renders_both(ragft, stored_runs, monkeypatch):
    from ragft.service.app import cli

    monkeypatch.setattr(cli, "get_settings", lambda: stored_runs.settings)
    reviews = Reviews(stored_runs.settings.database)
    reviews.mark("priced-b", "rag", "a0", correct=False, reviewer="Ada")
    reviews.close()
    out = ragft[1]("report", "priced-b", "--with-overrides")
    assert out.exit_code == 0, out.output
    assert "Reviewed: 1 answer(s) on 1 row(s) overridden (0 marked right, 1 wrong) by Ada (1)" in out.output
    assert (stored_runs.settings.eval.reports_dir / "reviewed" / "priced-b" / "report.html").is_file()
