import pytest

from eval.verdict import break_even_queries, decide

M = 0.1


def test_clear_winner_agreeing_with_the_folk_rule():
    v = decide("knowledge", {"base": 0.1, "fewshot": 0.2, "rag": 0.8}, {"base": "worse", "fewshot": "worse"}, margin=M)
    assert (v.best, v.worse, v.recommended, v.status, v.rule) == (
        "rag",
        ["base", "fewshot"],
        "rag",
        "decided",
        "agrees",
    )


def test_an_underpowered_tie_is_insufficient_evidence_not_use_base():
    scores = {"base": 0.50, "rag": 0.55, "lora": 0.60, "rag_lora": 0.30}
    v = decide("behaviour", scores, {"base": "undecided", "rag": "undecided", "rag_lora": "worse"}, margin=M,
               rows_to_settle=420)  # fmt: skip
    assert v.best == "lora" and v.undecided == ["base", "rag"] and v.recommended is None
    assert v.status == "insufficient evidence" and "420 rows" in v.reason
    assert v.rule == "inconclusive"  # not knowing is not evidence against the rule


def test_a_cheaper_arm_shown_non_inferior_is_recommended():
    v = decide("behaviour", {"base": 0.58, "lora": 0.60}, {"base": "non_inferior"}, margin=M)
    assert v.recommended == "base" and v.status == "decided" and "within 0.1" in v.reason
    assert v.rule == "inconclusive"  # base cannot be shown worse, so the rule is not confirmed


def test_undecided_arms_that_cost_more_do_not_block_the_pick():
    v = decide("knowledge", {"base": 0.2, "rag": 0.8, "rag_lora": 0.75}, {"base": "worse", "rag_lora": "undecided"},
               margin=M)  # fmt: skip
    assert v.recommended == "rag" and v.status == "decided" and v.rule == "agrees"  # rag_lora also retrieves


def test_contradiction_is_said_plainly():
    v = decide("knowledge", {"base": 0.1, "rag": 0.2, "lora": 0.9}, {"base": "worse", "rag": "worse"}, margin=M)
    assert v.rule == "contradicts" and "contradicts 'RAG for knowledge'" in v.rule_statement


def test_contradiction_needs_the_favoured_arms_to_lose_significantly():
    v = decide("behaviour", {"fewshot": 0.9, "lora": 0.5, "rag_lora": 0.85}, {"lora": "worse", "rag_lora": "undecided"},
               margin=M)  # fmt: skip
    assert v.best == "fewshot" and v.rule == "inconclusive"  # rag_lora is not significantly worse


def test_a_scratch_floor_takes_no_part_in_the_rule():
    v = decide("behaviour", {"base": 0.1, "lora": 0.9, "scratch": 0.2}, {"base": "worse", "scratch": "undecided"},
               margin=M)  # fmt: skip
    assert v.rule == "agrees"  # scratch undecided does not stop lora's win from agreeing with the rule


def test_families_outside_the_rule_and_lower_is_better():
    v = decide("freshness", {"base": 0.3, "rag": 0.1}, {"base": "worse"}, margin=M, higher_is_better=False)
    assert v.best == "rag" and v.rule == "n/a" and v.recommended == "rag"


def test_break_even():
    assert break_even_queries(600.0, rag_cost_ms=3000, arm_cost_ms=1000) == pytest.approx(300)
    assert break_even_queries(600.0, rag_cost_ms=1000, arm_cost_ms=3000) is None
