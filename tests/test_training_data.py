import pytest

from service.training_data import (
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
        SupervisedRow(f"k{i}", "knowledge", f"What does the K{i} cost?", None, f"${i}", (f"doc{i}",), (f"${i}",))
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


def test_validation_split_keeps_each_rows_examples_together_and_is_seeded():
    examples = closed_book_examples(rows(10), paraphrases=1, seed=0, abstention_phrase=PHRASE)
    train, val = split_validation(examples, 0.2, seed=3)
    assert {e.row_id for e in train}.isdisjoint({e.row_id for e in val})
    assert len({e.row_id for e in val}) == 2 and len(train) + len(val) == len(examples)
    assert split_validation(examples, 0.2, seed=3) == (train, val)
    capped_train, capped_val = split_validation(examples, 0.5, seed=3, max_examples=4)
    assert len(capped_val) == 4 and len(capped_train) == 16  # rows not needed for validation are trained on
    assert data_hash(train) != data_hash(val)


@pytest.fixture
def retriever(settings, corpus):
    from service.runtime import Runtime

    runtime = Runtime(settings, corpus)
    runtime.index()
    return runtime.retriever()


@pytest.mark.parametrize("no_gold", [0.0, 1.0])
def test_raft_examples_mix_gold_with_distractors_or_teach_abstention(retriever, no_gold):
    row = SupervisedRow("k1", "knowledge", "What does the Kestrel K2 cost?", None, "$249", ("kestrel-k2",), ("$249",))
    abstain = SupervisedRow("a1", "abstention", "What does the Kestrel K9 cost?", None, PHRASE)
    gold, none = retrieval_examples(
        [row, abstain], retriever, top_k=2, no_gold_fraction=no_gold, seed=0, abstention_phrase=PHRASE
    )
    system = gold.messages[0]["content"]
    assert "Answer using only the passages below" in system
    assert system.count("\n[") == 2  # top_k passages either way
    if no_gold == 0.0:
        assert gold.variant == "gold" and "[kestrel-k2]" in system and "costs $249" in system
        assert gold.target == "$249"
    else:
        assert gold.variant == "no-gold" and "[kestrel-k2]" not in system and gold.target == PHRASE
    assert none.variant == "retrieved" and none.target == PHRASE
