"""eval/reporting/comparison.py and `ragft compare --fail-on-regression`: the gate passes only headlines shown within the
margin; significant drops are still flagged."""

from ragft.eval.reporting.answers import score_run
from ragft.eval.reporting.comparison import headline_changes
from ragft.eval.store import Store


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
    from ragft.service.app import cli

    monkeypatch.setattr(cli, "get_settings", lambda: stored_runs.settings)
    _, run = ragft
    shown = run("compare", stored_runs.a, stored_runs.b)
    assert shown.exit_code == 0, shown.output
    assert "REGRESSION" in shown.output and "paired change" in shown.output
    failed = run("compare", stored_runs.a, stored_runs.b, "--fail-on-regression")
    assert failed.exit_code == 1
    assert "REGRESSION knowledge / base: answer_contained 1.000 -> 0.000 (-1.000" in failed.output
    assert "from priced-a to priced-b" in failed.output
    assert "NOT SHOWN WITHIN MARGIN knowledge / base" in failed.output
    # B to A: base improved, but rag dropped 0.5 on 10 rows: no significant drop (p 0.0625), and still no pass,
    # since nothing shows it within the margin (the old gate passed this)
    back = run("compare", stored_runs.b, stored_runs.a, "--fail-on-regression")
    assert back.exit_code == 1 and "REGRESSION" not in back.output.split("paired change")[1].split("NOT SHOWN")[0]
    assert "NOT SHOWN WITHIN MARGIN knowledge / rag" in back.output and "rows would settle it" in back.output
    assert run("compare", stored_runs.a, "no-such-run", "--fail-on-regression").exit_code == 2


def test_the_gate_holds_only_when_rows_show_the_later_run_within_the_margin(stored_runs):
    from dataclasses import replace

    store = Store(stored_runs.settings.database)
    try:
        a = score_run(store, stored_runs.a, stored_runs.settings)
    finally:
        store.close()
    same = {(c.family, c.arm): c for c in headline_changes(a, a)}
    rag = same[("knowledge", "rag")]
    # identical answers on 10 rows: no change, but 10 rows cannot show a 0.10 margin at 5% ...
    assert rag.difference == 0 and not rag.held and rag.rows_to_hold > rag.n
    # ... and at 40 rows they can (the same rows four times over, as separate rows)
    many = replace(a, values={k: {f"{r}-{i}": v for r, v in rows.items() for i in range(4)}
                              for k, rows in a.values.items()},
                   rows={f"{r}-{i}": row for r, row in a.rows.items() for i in range(4)})  # fmt: skip
    held = {(c.family, c.arm): c for c in headline_changes(many, many)}
    assert held[("knowledge", "rag")].held and held[("knowledge", "rag")].margin == 0.1
