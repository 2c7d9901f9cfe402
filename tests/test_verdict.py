import numpy as np
import pytest
from ragft.eval.scoring.verdict import (
    BELOW_BASELINE,
    DECIDED,
    INSUFFICIENT,
    PROBE,
    Pair,
    break_even_queries,
    decide,
    judge_family,
)

M = 0.1


def test_clear_winner_agreeing_with_the_folk_rule():
    v = decide("knowledge", {"base": 0.1, "fewshot": 0.2, "rag": 0.8}, {"base": "worse", "fewshot": "worse"}, margin=M)
    assert (v.best, v.worse, v.recommended, v.status, v.rule) == ("rag", ["base", "fewshot"], "rag", DECIDED, "agrees")
    assert "significantly better than Base, Few-shot" in v.reason


def test_an_underpowered_tie_is_insufficient_evidence_not_use_base():
    scores = {"base": 0.50, "rag": 0.55, "lora": 0.60, "rag_lora": 0.30}
    v = decide("behaviour", scores, {"base": "undecided", "rag": "undecided", "rag_lora": "worse"}, margin=M,
               rows_to_settle=420)  # fmt: skip
    assert v.best == "lora" and v.undecided == ["base", "rag"] and v.recommended is None
    assert v.status == INSUFFICIENT and "420 rows" in v.reason
    assert v.rule == "inconclusive"  # not knowing is not evidence against the rule


def test_a_cheaper_arm_shown_non_inferior_is_recommended():
    v = decide("behaviour", {"base": 0.58, "lora": 0.60}, {"base": "non_inferior"}, margin=M)
    assert v.recommended == "base" and v.status == DECIDED and "within 0.1 of LoRA" in v.reason
    assert "costs less" in v.reason and v.rule == "inconclusive"  # base cannot be shown worse


def test_an_arm_not_shown_worse_blocks_the_leader_whatever_it_costs():
    """The old rule ignored undecided arms dearer than the pick; the leader must be shown within the margin of
    every arm not shown worse than it, dearer or not."""
    scores = {"base": 0.2, "rag": 0.8, "rag_lora": 0.75}
    blocked = decide("knowledge", scores, {"base": "worse", "rag_lora": "undecided"}, margin=M)
    assert blocked.status == INSUFFICIENT and blocked.blocking == [("rag", "rag_lora")]
    shown = [Pair("rag", "base", worse="base"), Pair("rag", "rag_lora", a_within=True),
             Pair("rag_lora", "base", worse="base")]  # fmt: skip
    v = decide("knowledge", scores, margin=M, pairs=shown)
    assert v.recommended == "rag" and v.status == DECIDED and v.leading == ["rag"] and v.rule == "agrees"
    assert "significantly better than Base and is shown within 0.1 of RAG + LoRA" in v.reason


@pytest.mark.parametrize("shown_within", [False, True])
def test_swapping_the_best_two_arms_gives_the_same_status(shown_within):
    """Issue #33 item 1: base leading lora by a hair was 'use Base, decided' and the swap 'insufficient'."""
    pairs = [Pair("base", "lora", a_within=shown_within, b_within=shown_within)]
    one = decide("behaviour", {"base": 0.51, "lora": 0.50}, margin=M, pairs=pairs)
    two = decide("behaviour", {"base": 0.50, "lora": 0.51}, margin=M,
                 pairs=[Pair("lora", "base", a_within=shown_within, b_within=shown_within)])  # fmt: skip
    assert one.status == two.status == (DECIDED if shown_within else INSUFFICIENT)
    assert one.recommended == two.recommended == ("base" if shown_within else None)


def test_swap_symmetry_holds_through_the_tests_on_row_values():
    """60 rows, 20 of them discordant, split 11 to 9: a lead of two rows. Either arm's name on either column gives
    the same status; so do 3 discordant rows (both arms then shown within the margin of each other)."""
    base = {f"r{i}": float(i % 2) for i in range(60)}
    lora = dict(base) | {f"r{i}": 1.0 - base[f"r{i}"] for i in range(20)}  # 10 wins and 10 losses
    lora["r20"] = 1.0 - lora["r20"]  # base had r20 wrong (even): now lora leads 11 to 9... or the other way round
    close = dict(base) | {f"r{i}": 1.0 - base[f"r{i}"] for i in range(3)}
    for other, status in ((lora, INSUFFICIENT), (close, DECIDED)):
        seen = set()
        for a, b in ((base, other), (other, base)):
            out = judge_family("behaviour", {"base": a, "lora": b}, higher_is_better=True, margin=M, seed=0)
            seen.add((out["verdict"].status, out["verdict"].recommended))
        assert seen == {(status, "base" if status == DECIDED else None)}


def test_lower_is_better_and_families_outside_the_rule():
    v = decide("freshness", {"base": 0.3, "rag": 0.1}, {"base": "worse"}, margin=M, higher_is_better=False)
    assert v.best == "rag" and v.rule == "n/a" and v.recommended == "rag"


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


def test_the_rule_does_not_agree_beside_no_arm_beats_the_baseline():
    v = decide("knowledge", {"base": 0.0, "rag": 0.175}, {"base": "worse"}, margin=M, beats_baseline={"rag": False},
               baseline=0.06)  # fmt: skip
    assert v.status == BELOW_BASELINE and v.recommended is None and v.rule == "inconclusive"
    assert "not shown above the chance baseline (0.060)" in v.reason


def test_reasons_say_only_what_was_computed():
    """Issue #33 item 7: 'every cheaper arm is significantly worse' beside a non-inferior arm; 'RAG costs less'
    when base was best."""
    pairs = [Pair("lora", "fewshot", b_within=True, a_within=True), Pair("lora", "base", worse="base"),
             Pair("fewshot", "base", worse="base")]  # fmt: skip
    v = decide("behaviour", {"base": 0.0, "fewshot": 0.28, "lora": 0.30}, margin=M, pairs=pairs)
    assert v.recommended == "fewshot" and "significantly better than Base and is shown within 0.1 of LoRA" in v.reason
    assert "every cheaper arm" not in v.reason
    pairs = [Pair("base", "rag", a_within=True, b_within=True)]
    v = decide("knowledge", {"base": 0.50, "rag": 0.49}, margin=M, pairs=pairs)
    assert v.recommended == "base" and "costs less" not in v.reason and "RAG" in v.reason


def test_two_answers_relative_best_and_above_chance():
    """The demo's knowledge: RAG significantly above base, and not above chance: relative decided, chance not."""
    v = decide("knowledge", {"base": 0.0, "rag": 0.175}, margin=M, pairs=[Pair("rag", "base", worse="base")],
               beats_baseline={"rag": False}, baseline=0.06)  # fmt: skip
    assert v.relative == DECIDED and v.leading == ["rag"] and v.above_chance == "not shown above chance"
    assert v.status == BELOW_BASELINE
    up = decide("knowledge", {"base": 0.0, "rag": 0.175}, margin=M, pairs=[Pair("rag", "base", worse="base")],
                beats_baseline={"rag": True}, baseline=0.06)  # fmt: skip
    assert (up.status, up.recommended, up.above_chance) == (DECIDED, "rag", "above chance")


def test_forgetting_is_tested_against_base_and_recommends_nothing():
    """General (no chance guess) gets per-arm tests against base, never 'use X' from the floor."""
    rng = np.random.default_rng(1)
    base = {f"g{i}": float(rng.random() < 0.5) for i in range(40)}
    lora = {i: 0.0 for i in base}  # forgets everything
    rag_lora = dict(base) | {"g0": 1.0 - base["g0"]}
    out = judge_family("general", {"base": base, "lora": lora, "rag_lora": rag_lora}, higher_is_better=True,
                       margin=M, seed=0, reference={i: 0.0 for i in base}, reference_kind="floor")  # fmt: skip
    v = out["verdict"]
    assert v.status == PROBE and v.recommended is None and v.worse == ["lora"]
    assert set(out["forgetting_vs_base"]) == {"lora", "rag_lora"} and out["comparisons"] == []
    assert len(out["pairs"]) == 2  # arm against base only: no duplicate best-against-others tests
    assert "LoRA significantly below Base (forgets)" in v.reason and "Use" not in v.reason
    alone = judge_family("general", {"lora": lora, "rag_lora": rag_lora}, higher_is_better=True, margin=M, seed=0,
                         reference={i: 0.0 for i in base}, reference_kind="floor")  # fmt: skip
    assert alone["verdict"].status == PROBE and alone["verdict"].recommended is None  # no base: never "use X"
    assert alone["baseline_comparisons"] == [] and "Base did not answer" in alone["verdict"].reason


def test_a_family_verdict_reads_only_its_own_rows():
    rng = np.random.default_rng(2)
    rows = [f"k{i}" for i in range(60)]
    values = {"base": {i: 0.0 for i in rows}, "rag": {i: float(rng.random() < 0.6) for i in rows}}
    one = judge_family("knowledge", values, higher_is_better=True, margin=M, seed=0,
                       reference={i: 0.0 for i in rows})  # fmt: skip
    assert one["verdict"].status == DECIDED and one["verdict"].recommended == "rag"
    assert all(p["p_holm"] == p["p_value"] for p in one["pairs"])  # one pair: Holm over the family's one test


def test_picking_the_best_after_the_fact_keeps_the_family_wise_error():
    """Six equally good arms on 60 independent rows: how often some arm is called significantly worse than another.
    Holm over the family's 15 pairwise tests keeps it at or under 5% (Holm over best-against-others alone: about
    10%, issue #33 item 4). A recommendation here is never wrong: every arm is within any margin of the others."""
    rng = np.random.default_rng(3)
    arms = ["base", "fewshot", "rag", "lora", "rag_lora", "scratch"]
    false_worse, reps = 0, 80
    for _ in range(reps):
        values = {a: {f"r{i}": float(rng.random() < 0.5) for i in range(60)} for a in arms}
        out = judge_family("knowledge", values, higher_is_better=True, margin=M, seed=0)
        false_worse += any(p["worse"] for p in out["pairs"])
    assert false_worse / reps <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / reps)


def test_break_even():
    assert break_even_queries(600.0, rag_cost_ms=3000, arm_cost_ms=1000) == pytest.approx(300)
    assert break_even_queries(600.0, rag_cost_ms=1000, arm_cost_ms=3000) is None


def test_the_margin_may_be_a_share_of_the_best_arms_lead_over_chance():
    from ragft.eval.scoring.verdict import family_margin

    assert family_margin(0.1, None, 0.305, 0.076) == (0.1, "flat")
    margin, how = family_margin(0.1, 0.5, 0.305, 0.076)
    assert margin == pytest.approx(0.1145) and "0.5 of the best arm's lead over chance (0.229)" in how
    assert family_margin(0.1, 0.5, 0.05, 0.076)[0] == 0.1  # best not above chance: the flat margin
    assert family_margin(0.1, 0.5, 0.10, 0.30, higher_is_better=False)[0] == pytest.approx(0.1)  # lead 0.2, half
    assert family_margin(0.1, 0.5, 0.3, None) == (0.1, "flat")  # no chance baseline
    # abstention's three-way score runs from -1 to 0.5: a flat 0.10 is 0.10 of that scale
    assert family_margin(0.1, None, 0.2, 0.0, scale=1.5) == (0.15, "flat (0.1 of the headline's scale, 1.5)")
