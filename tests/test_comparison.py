"""eval/comparison.py and `ragft compare --fail-on-regression`: a significant headline drop fails CI."""

from eval.answers import score_run
from eval.comparison import headline_changes
from eval.store import Store


def test_headline_changes_are_paired_holm_adjusted_and_flag_significant_drops(stored_runs):
    store = Store(stored_runs.settings.database)
    try:
        a, b = (
            score_run(store, stored_runs.a, stored_runs.settings),
            score_run(store, stored_runs.b, stored_runs.settings),
        )
    finally:
        store.close()
    changes = {(c.family, c.arm): c for c in headline_changes(a, b)}
    base = changes[("knowledge", "base")]
    # 10 paired rows, all discordant against base: exact McNemar p = 2 / 2^10, then Holm over 6 changes
    assert (base.before, base.after, base.difference, base.n, base.test) == (1.0, 0.0, -1.0, 10, "mcnemar-exact")
    assert base.p_value == round(2 / 1024, 4) and base.regression and base.ci_high < 0
    rag = changes[("knowledge", "rag")]
    assert rag.difference == 0.5 and not rag.significant and not rag.regression  # 5 discordant rows: p = 0.0625
    assert {k for k, c in changes.items() if c.regression} == {
        ("knowledge", "base"), ("knowledge_unseen", "base"), ("abstention", "base")}  # fmt: skip
    assert not any(c.regression for c in headline_changes(b, a))  # the other way base improved


def test_compare_fails_on_a_regression_only_when_asked_and_names_family_and_arm(ragft, stored_runs, monkeypatch):
    from service.app import cli

    monkeypatch.setattr(cli, "get_settings", lambda: stored_runs.settings)
    _, run = ragft
    shown = run("compare", stored_runs.a, stored_runs.b)
    assert shown.exit_code == 0, shown.output
    assert "REGRESSION" in shown.output and "paired change" in shown.output
    failed = run("compare", stored_runs.a, stored_runs.b, "--fail-on-regression")
    assert failed.exit_code == 1
    assert "REGRESSION knowledge / base: answer_contained 1.000 -> 0.000 (-1.000" in failed.output
    assert "from priced-a to priced-b" in failed.output
    assert run("compare", stored_runs.b, stored_runs.a, "--fail-on-regression").exit_code == 0
    assert run("compare", stored_runs.a, "no-such-run", "--fail-on-regression").exit_code == 2
