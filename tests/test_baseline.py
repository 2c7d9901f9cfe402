"""The chance baseline (`ragft.eval.scoring.baseline`): chosen on train rows, its answer type read from the question, scored on
test rows through the headline metric (issue: honest figures)."""

import pytest
from ragft.eval.scoring.baseline import MIN_TRAIN_ROWS, chance_baseline, question_type
from ragft.eval.scoring.metrics import ScoringContext
from ragft.eval.tasks import TaskRow

PHRASE = "I don't know based on the provided documents."
CTX = ScoringContext(PHRASE)


def knowledge(i: int, split: str, answer: str, question: str | None = None) -> TaskRow:
    return TaskRow.model_validate({"id": f"{split}{i}", "family": "knowledge", "split": split,
                                   "question": question or f"How much does the P{i} cost?", "answers": [answer]})  # fmt: skip


def abstention(i: int, split: str) -> TaskRow:
    return TaskRow.model_validate({"id": f"{split}-a{i}", "family": "abstention", "split": split,
                                   "question": f"What does the P{i} weigh?"})  # fmt: skip


def test_all_distinct_answers_give_a_baseline_near_zero():
    train = [knowledge(i, "train", f"${100 + i}") for i in range(30)]
    test = [knowledge(i, "test", f"${500 + i}") for i in range(30)]
    b = chance_baseline("knowledge", test, train, CTX)
    assert b.value == 0.0 and len(b.values) == 30 and "money" in b.guess


def test_one_dominant_answer_gets_its_true_share_on_the_test_rows():
    train = [knowledge(i, "train", "$100" if i < 16 else f"${200 + i}") for i in range(20)]
    test = [knowledge(i, "test", "$100" if i < 15 else f"${700 + i}") for i in range(20)]
    b = chance_baseline("knowledge", test, train, CTX)
    assert b.value == pytest.approx(15 / 20)


def test_the_guess_never_sees_the_test_answers_and_reads_the_type_from_the_question():
    train = [knowledge(i, "train", "$100") for i in range(6)]
    train += [knowledge(10 + i, "train", "March 2021", f"When was the P{i} released?") for i in range(6)]
    # every test answer is "$999": a guess that looked at them would score 1
    test = [knowledge(i, "test", "$999") for i in range(5)]
    assert chance_baseline("knowledge", test, train, CTX).value == 0.0
    # a date question gets the date guess even though its gold answer is written like money
    dated = [knowledge(i, "test", "March 2021", f"When did the P{i} ship?") for i in range(4)]
    assert chance_baseline("knowledge", dated, train, CTX).value == 1.0
    assert (question_type("When did the P1 ship?"), question_type("How much is it?")) == ("date", "money")


def test_too_few_train_rows_give_a_reason_not_a_number():
    train = [knowledge(i, "train", "$100") for i in range(MIN_TRAIN_ROWS - 1)]
    b = chance_baseline("knowledge", [knowledge(0, "test", "$100")], train, CTX)
    assert b.value is None and b.values == {} and f"a guess needs at least {MIN_TRAIN_ROWS}" in b.reason


def test_abstention_baseline_is_the_better_constant_policy_on_train_and_halves_weigh_the_same():
    train = [knowledge(i, "train", f"${100 + i}") for i in range(10)] + [abstention(i, "train") for i in range(6)]
    # ten answerable test rows and two unanswerable: row-weighted, always abstaining would score 2/12
    test = [knowledge(i, "test", f"${500 + i}") for i in range(10)] + [abstention(i, "test") for i in range(2)]
    b = chance_baseline("abstention", test, train, CTX)
    # three-way headline: declining scores 0 on every row, so always abstaining is 0 (it was 0.5 by construction)
    assert "always abstain" in b.guess and b.value == pytest.approx(0.0)


def test_a_perfect_guess_never_beats_always_abstaining():
    """Never abstaining with every answerable row right still answers every unanswerable row wrongly: 0.5 - 0.5 = 0,
    a tie that goes to always abstaining."""
    train = [knowledge(i, "train", "$100") for i in range(10)] + [abstention(i, "train") for i in range(6)]
    test = [knowledge(i, "test", "$100") for i in range(10)] + [abstention(i, "test") for i in range(4)]
    b = chance_baseline("abstention", test, train, CTX)
    assert "always abstain" in b.guess and b.value == 0.0 and set(b.raw.values()) == {0.0}
