"""Deciding each family: the best arm, the arms it cannot be told apart from, and what to use.

The recommendation is the cheapest arm not significantly worse than the best, cheapest by
each arm's `cost_rank` fact (no training and short prompts first). The folk rule "RAG for
knowledge, fine-tuning for behaviour" is a hypothesis: each family's entry in
`eval/families.py` says which arms it favours (by their facts); each verdict says whether this
run's data agrees with it, contradicts it, or cannot tell. From-scratch floors take no part
in the rule.

Example:
    >>> v = decide("knowledge", {"base": 0.1, "rag": 0.8}, {("rag", "base"): True})
    >>> v.best, v.recommended, v.rule
    ('rag', 'rag', 'agrees')
"""

from __future__ import annotations

from dataclasses import dataclass

from eval.families import FAMILIES, is_floor
from service.arms import ARMS, by_cost


@dataclass(frozen=True)
class Verdict:
    family: str
    best: str
    tied_with: list[str]
    recommended: str
    reason: str
    rule: str  # "agrees", "contradicts", "inconclusive" or "n/a"
    rule_statement: str


def decide(
    family: str, scores: dict[str, float], worse_than_best: dict[tuple[str, str], bool], higher_is_better: bool = True
) -> Verdict:
    """`scores`: headline per arm; `worse_than_best[(best, arm)]`: the paired test says `arm` is significantly worse."""
    order = by_cost(scores)
    ranked = sorted(order, key=lambda a: (-scores[a] if higher_is_better else scores[a], order.index(a)))
    best = ranked[0]
    tied = [a for a in order if a != best and not worse_than_best.get((best, a), False)]
    contenders = [a for a in order if a == best or a in tied]
    recommended = contenders[0]
    label = ARMS[best].label
    if recommended == best:
        reason = f"{label} scores highest ({scores[best]:.3f})"
        reason += (
            f"; {', '.join(ARMS[a].label for a in tied)} not significantly worse"
            if tied
            else " and beats every other arm significantly"
        )
    else:
        reason = (
            f"{label} scores highest ({scores[best]:.3f}) but {ARMS[recommended].label} ({scores[recommended]:.3f}) "
            "is not significantly worse and costs less"
        )
    rule, statement = _rule_check(family, best, tied, order)
    return Verdict(family, best, tied, recommended, reason, rule, statement)


def _rule_check(family: str, best: str, tied: list[str], scored: list[str]) -> tuple[str, str]:
    """Agrees only if a favoured arm wins and every other arm is significantly worse; contradicts only if
    another arm wins and every favoured arm is significantly worse; otherwise the run cannot tell."""
    entry = FAMILIES.get(family)
    if entry is None or entry.favoured is None:
        return "n/a", "the folk rule says nothing about this family"
    name = entry.rule
    if is_floor(ARMS[best]):
        return "inconclusive", f"Cannot settle '{name}': a from-scratch floor leads, and the rule compares pre-trained arms."
    tied = [a for a in tied if not is_floor(ARMS[a])]
    expected = {a for a in scored if entry.favours(ARMS[a])}
    if not expected:
        return "n/a", f"no arm that '{name}' favours took part in this run"
    others_tied = [a for a in tied if a not in expected]
    favoured_tied = [a for a in tied if a in expected]
    if best in expected and not others_tied:
        return (
            "agrees",
            f"The data agrees with '{name}': {ARMS[best].label} is significantly better than every arm the rule does not favour.",
        )
    if best not in expected and not favoured_tied:
        return "contradicts", (
            f"The data contradicts '{name}': {ARMS[best].label} wins and every arm the rule favours "
            f"({', '.join(sorted(expected))}) is significantly worse."
        )
    lead = ARMS[best].label
    undecided = ", ".join(ARMS[a].label for a in (others_tied if best in expected else favoured_tied))
    return "inconclusive", (
        f"Cannot settle '{name}' on this many rows: {lead} leads but {undecided} cannot be told apart from it."
    )


def break_even_queries(training_s: float, rag_cost_ms: float, arm_cost_ms: float) -> float | None:
    """Queries after which a fine-tune's one-off training time is repaid by its cheaper answers, or None if never."""
    saving_s = (rag_cost_ms - arm_cost_ms) / 1000
    if saving_s <= 0:
        return None
    return training_s / saving_s
