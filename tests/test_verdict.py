import pytest

from eval.verdict import break_even_queries, decide


def test_clear_winner_agreeing_with_the_folk_rule():
    v = decide(
        "knowledge", {"base": 0.1, "fewshot": 0.2, "rag": 0.8}, {("rag", "base"): True, ("rag", "fewshot"): True}
    )
    assert (v.best, v.tied_with, v.recommended, v.rule) == ("rag", [], "rag", "agrees")


def test_tie_recommends_the_cheapest_arm_in_registry_order():
    scores = {"base": 0.50, "rag": 0.55, "lora": 0.60, "rag_lora": 0.30}
    worse = {("lora", "base"): False, ("lora", "rag"): False, ("lora", "rag_lora"): True}
    v = decide("behaviour", scores, worse)
    assert v.best == "lora" and v.tied_with == ["base", "rag"] and v.recommended == "base"
    assert v.rule == "inconclusive" and "costs less" in v.reason  # a tie is not evidence against the rule


def test_contradiction_is_said_plainly():
    v = decide("knowledge", {"base": 0.1, "rag": 0.2, "lora": 0.9}, {("lora", "base"): True, ("lora", "rag"): True})
    assert v.rule == "contradicts" and "contradicts 'RAG for knowledge'" in v.rule_statement


def test_inconclusive_when_the_favoured_arm_leads_but_others_tie():
    v = decide("knowledge", {"base": 0.5, "rag": 0.6}, {("rag", "base"): False})
    assert v.recommended == "base" and v.rule == "inconclusive" and "Base cannot be told apart" in v.rule_statement


def test_contradiction_needs_the_favoured_arms_to_lose_significantly():
    v = decide("behaviour", {"fewshot": 0.9, "lora": 0.5, "rag_lora": 0.85}, {("fewshot", "lora"): True})
    assert v.best == "fewshot" and v.rule == "inconclusive"  # rag_lora is not significantly worse


def test_families_outside_the_rule_and_lower_is_better():
    v = decide("freshness", {"base": 0.3, "rag": 0.1}, {("rag", "base"): True}, higher_is_better=False)
    assert v.best == "rag" and v.rule == "n/a"


def test_break_even():
    assert break_even_queries(600.0, rag_cost_ms=3000, arm_cost_ms=1000) == pytest.approx(300)
    assert break_even_queries(600.0, rag_cost_ms=1000, arm_cost_ms=3000) is None
