"""A run's time left: each arm's remaining answers at that arm's own measured cost per answer (`ragft.eval.running.progress`), as
the job worker and the CLI show it."""

import pytest
from ragft.eval.running.progress import answering_eta_s, eta_s, planned_answers


def test_planned_answers_count_each_arms_rows_and_extra_training_seeds():
    rows = {"knowledge": ["k1", "k2", "k3"], "abstention": ["a1"], "general": ["g1", "g2"]}
    planned = planned_answers(rows, ["base", "rag", "lora"], training_seeds=2)
    # general probes go to the base model and arms whose weights changed (forgetting), not to rag
    assert planned == {"base": 6, "rag": 4, "lora": 6, "lora@seed1": 6}


def test_eta_weights_arms_by_their_measured_cost_not_one_flat_rate():
    # the run: 396 answers; base finished at 0.1 s an answer, rag has 10 of 132 at 2 s each (long prompts)
    planned = {"base": 132, "rag": 132, "lora": 132}
    answered = {"base": (132, 132 * 100.0), "rag": (10, 10 * 2000.0)}
    left = eta_s(planned, answered)
    # rag: 122 x 2 s; lora not started, priced like the started arm that does not retrieve (base): 132 x 0.1 s
    assert left == pytest.approx(122 * 2.0 + 132 * 0.1)
    flat = (132 * 0.1 + 10 * 2.0) / 142 * (396 - 142)  # what one rate over all answers so far said
    assert flat < 60 < left  # "under a minute" against over four minutes of rag answers left
    assert eta_s(planned, {}) is None  # nothing measured yet
    assert eta_s({"rag": 5}, {"rag": (5, 500.0)}) == 0.0
    # no retrieving arm started yet: rag is priced like the dearest started arm
    assert eta_s({"base": 1, "rag": 2}, {"base": (1, 100.0)}) == pytest.approx(2 * 0.1)


def test_a_runs_time_left_is_read_from_its_stored_answers_by_the_worker_and_the_cli(settings, tmp_path, capsys):
    from ragft.eval.spec import RunSpec
    from ragft.eval.store import Store
    from ragft.service.app import cli

    from tests.stored_runs import store_run

    corpus = tmp_path / "priced"
    answers = {("base", f"k{i}"): "It costs $1." for i in range(10)} | {("rag", "k0"): "$463", ("rag", "k1"): "$118"}
    store_run(settings, corpus, "half", answers)  # meta: 10 knowledge and 10 abstention rows, arms base and rag
    store = Store(settings.database)
    try:
        # base: 10 of 20 left at 0.1 s; rag: 18 of 20 left at its own 0.405 s (400 ms batch of 1 plus 5 ms retrieval)
        assert answering_eta_s(store, "half", ["base", "rag"], 1) == pytest.approx(10 * 0.1 + 18 * 0.405)
    finally:
        store.close()
    printer = cli._progress_printer(settings, RunSpec(corpus=corpus, arms=["base", "rag"], families=["knowledge"]))
    printer.named("half")
    printer("answer rag", 12, 40)
    assert "answer rag: 12/40, ~0.1 min left" in capsys.readouterr().err  # 8.29 s
