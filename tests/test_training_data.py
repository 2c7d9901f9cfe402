from collections import Counter
from pathlib import Path

import pytest
from ragft.service.training_data import (
    SupervisedRow,
    closed_book_examples,
    data_hash,
    paraphrase,
    retrieval_examples,
    split_validation,
)

PHRASE = "I don't know based on the provided documents."


def rows(n=6):
    return [
        SupervisedRow(
            f"k{i}", "knowledge", f"What does the K{i} cost?", None, f"${i}", (f"doc{i}",), (f"${i}",), grounded=True
        )
        for i in range(n)
    ]


def test_closed_book_uses_the_lora_prompt_and_adds_paraphrases():
    examples = closed_book_examples(rows(2), paraphrases=2, seed=0, abstention_phrase=PHRASE)
    assert [e.variant for e in examples] == ["original", "paraphrase", "paraphrase"] * 2
    first = examples[0]
    assert first.messages[-1] == {"role": "user", "content": "What does the K0 cost?"}
    assert PHRASE in first.messages[0]["content"] and first.target == "$0"
    assert all(e.row_id == "k0" for e in examples[:3])


def test_a_paraphrase_equal_to_a_test_input_is_dropped():
    row = rows(1)
    made = closed_book_examples(row, paraphrases=8, seed=0, abstention_phrase=PHRASE)
    test_input = paraphrase(row[0].question, "Quick question: {q}")
    kept = closed_book_examples(row, paraphrases=8, seed=0, abstention_phrase=PHRASE, forbidden_inputs={test_input})
    assert len(kept) == len(made) - 1
    assert all(e.messages[-1]["content"] != test_input for e in kept)


def test_validation_holds_out_rewordings_of_trained_facts_and_whole_rows_elsewhere():
    examples = closed_book_examples(rows(10), paraphrases=1, seed=0, abstention_phrase=PHRASE)
    train, val = split_validation(examples, 0.2, seed=3)
    assert len(val) == 2 and all(e.variant == "paraphrase" for e in val)  # one rewording of each held-out row...
    trained_rows = {e.row_id for e in train if e.variant == "original"}
    assert {e.row_id for e in val} <= trained_rows  # ...whose fact is still trained: never an unseen fact
    assert split_validation(examples, 0.2, seed=3) == (train, val) and len(train) + len(val) == len(examples)
    assert data_hash(train) != data_hash(val)
    behaviour = [SupervisedRow(f"b{i}", "behaviour", f"ticket {i}", "Label it.", "refund") for i in range(10)]
    b_train, b_val = split_validation(closed_book_examples(behaviour, paraphrases=1, seed=0, abstention_phrase=PHRASE),
                                      0.2, seed=3)  # fmt: skip
    assert len(b_val) == 2 and {e.row_id for e in b_val}.isdisjoint({e.row_id for e in b_train})  # held-out rows
    _, capped = split_validation(examples, 0.5, seed=3, max_examples=3)
    assert len(capped) == 3


def test_corpus_rephrasings_are_trained_and_test_inputs_never_are():
    row = SupervisedRow("k1", "knowledge", "What does the K1 cost?", None, "$1", grounded=True, rephrasings=(
        "What is the price of the K1?", "How much is a K1?"))  # fmt: skip
    examples = closed_book_examples([row], paraphrases=0, seed=0, abstention_phrase=PHRASE,
                                    forbidden_inputs={"How much is a K1?"})  # fmt: skip
    assert [(e.variant, e.messages[-1]["content"]) for e in examples] == [
        ("original", "What does the K1 cost?"), ("rephrasing", "What is the price of the K1?")]  # fmt: skip
    assert all(e.family == "knowledge" for e in examples)


@pytest.fixture
def retriever(settings, corpus):
    from ragft.service.runtime import Runtime

    runtime = Runtime(settings, corpus)
    runtime.index()
    return runtime.retriever()


@pytest.mark.parametrize(("gold_fraction", "recipe"), [(1.0, "raft"), (0.0, "raft"), (0.0, "abstain_without_gold")])
def test_raft_keeps_the_gold_passage_at_its_rate_and_trains_the_answer_either_way(retriever, gold_fraction, recipe):
    row = SupervisedRow(
        "k1", "knowledge", "What does the Kestrel K2 cost?", None, "$249", ("kestrel-k2",), ("$249",), grounded=True
    )
    abstain = SupervisedRow("a1", "abstention", "What does the Kestrel K9 cost?", None, PHRASE)
    gold, none = retrieval_examples(
        [row, abstain], retriever, top_k=2, gold_fraction=gold_fraction, recipe=recipe, seed=0,
        abstention_phrase=PHRASE,
    )  # fmt: skip
    system = gold.messages[0]["content"]
    assert "Answer using only the passages below" in system
    assert system.count("\n[") == 2  # top_k passages either way
    if gold_fraction == 1.0:
        assert gold.variant == "gold" and "[kestrel-k2]" in system and "costs $249" in system
    else:
        assert gold.variant == "no-gold" and "[kestrel-k2]" not in system
    # RAFT as published trains the answer with or without the gold passage; the variant teaches abstention
    assert gold.target == (PHRASE if recipe == "abstain_without_gold" and gold_fraction == 0.0 else "$249")
    assert none.variant == "retrieved" and none.target == PHRASE


def test_raft_gold_rate_over_many_rows(retriever):
    rows_ = [SupervisedRow(f"k{i}", "knowledge", f"What does the Kestrel K2 cost ({i})?", None, "$249",
                           ("kestrel-k2",), ("$249",), grounded=True) for i in range(200)]  # fmt: skip
    made = retrieval_examples(rows_, retriever, top_k=2, gold_fraction=0.8, recipe="raft", seed=0,
                              abstention_phrase=PHRASE)  # fmt: skip
    share = sum(e.variant == "gold" for e in made) / len(made)
    assert 0.72 <= share <= 0.88 and all(e.target == "$249" for e in made)


def test_the_training_subset_takes_a_count_for_every_family_or_one_per_family(settings, full_corpus):
    """lora.max_rows_per_family: one count caps every family; a dict caps the families it names (the demo gives
    behaviour more rows than closed-book knowledge) and leaves the others whole."""
    from ragft.eval.running.pipeline import training_rows
    from ragft.eval.tasks import load_tasks

    rows = load_tasks(full_corpus)

    def counts(cap, kind=None):
        lora = settings.lora.model_copy(update={"max_rows_per_family": cap})
        return Counter(r.family for r in training_rows(settings.model_copy(update={"lora": lora}), rows, kind))

    every = counts(None)
    assert every["knowledge"] == 2 and every["behaviour"] >= 1
    assert counts(1) == {family: 1 for family in every}
    assert counts({"knowledge": 1}) == every | {"knowledge": 1}
    per_kind = {"knowledge": 2, "rag_lora/knowledge": 1}  # rag_lora's long prompts: fewer rows for the same cost
    assert counts(per_kind, "rag_lora")["knowledge"] == 1 and counts(per_kind, "lora")["knowledge"] == 2


def test_a_cap_at_or_above_a_familys_rows_trains_them_as_uncapped_training_does(settings):
    """The demo's lora behaviour adapter names every row: it must be the adapter `ragft train` makes (same rows in
    the same order; order alone moved a behaviour adapter between 0.20 and 0.30)."""
    from ragft.eval.running.pipeline import training_rows
    from ragft.eval.tasks import load_tasks

    rows = load_tasks(Path(__file__).parent.parent / "corpora" / "quillmark")

    def ids(cap, kind="lora"):
        lora = settings.lora.model_copy(update={"max_rows_per_family": cap})
        trained = training_rows(settings.model_copy(update={"lora": lora}), rows, kind)
        return [r.row_id for r in trained if r.family == "behaviour"]

    every = ids(None)
    assert ids({"lora/behaviour": len(every)}) == every == ids({"lora/behaviour": len(every) + 50})
    assert ids({"behaviour": 20, "lora/behaviour": 10_000}) == every and len(ids({"behaviour": 20})) == 20
    assert sorted(ids({"behaviour": len(every) - 1})) != sorted(every)  # below: a seeded subset, as before


def test_the_demo_trains_its_declared_allocation_for_its_epochs(settings):
    from ragft.eval.running.pipeline import demo_settings

    demo = demo_settings(settings).lora
    assert demo.max_rows_per_family == settings.eval.demo_train_rows and demo.epochs == settings.eval.demo_epochs
    assert demo.for_group("lora", "behaviour").epochs == 2 and demo.for_group("lora", "questions").epochs == 1
    assert demo.for_group("rag_lora", "behaviour").epochs == settings.eval.demo_epochs
    assert demo.max_rows_per_family["lora/behaviour"] > demo.max_rows_per_family["behaviour"]
    mine = settings.model_copy(update={"lora": settings.lora.model_copy(update={"max_rows_per_family": 3})})
    assert demo_settings(mine).lora.max_rows_per_family == 3  # a subset the user set stays
