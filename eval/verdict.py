"""Deciding each family: the best arm, which arms are worse, which are as good, and what to use.

A tie is not evidence. Each arm other than the best is, after the paired test and the
non-inferiority test (both Holm-adjusted over the report):

- `worse`: significantly worse than the best;
- `non_inferior`: shown to be worse by less than the declared margin (`eval.non_inferiority_margin`);
- `undecided`: neither: this run cannot tell.

The recommendation is the cheapest of the best and the non-inferior arms (cheapest by each
arm's `cost_rank` fact: no training and short prompts first), but only if no cheaper arm is
undecided; otherwise the verdict is "insufficient evidence" and says how many rows would
settle it. An underpowered run therefore never recommends the base model by default.

Only an arm that beats the family's baseline (`eval.baseline`: the constant guess chosen on
train rows, or the metric's floor where there is no guess; a paired test, Holm-adjusted over
the tests of every family's best and non-inferior arms, the only arms a verdict could name) can
be recommended. When none does the verdict is "no arm beats the baseline":
an arm that fails every row is never "use Base" because every other arm failed too.

The folk rule "RAG for knowledge, fine-tuning for behaviour" is a hypothesis: each family's
entry in `eval/families.py` says which arms it favours (by their facts). The data agrees with
it only if a favoured arm is best and every other arm is significantly worse, contradicts it
only if another arm is best and every favoured arm is significantly worse, and otherwise
cannot tell. From-scratch floors take no part in the rule.

Example:
    >>> v = decide("knowledge", {"base": 0.1, "rag": 0.8}, {"base": "worse"}, margin=0.1)
    >>> v.best, v.recommended, v.status, v.rule
    ('rag', 'rag', 'decided', 'agrees')
    >>> decide("knowledge", {"base": 0.5, "rag": 0.6}, {"base": "undecided"}, margin=0.1).status
    'insufficient evidence'
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eval.families import FAMILIES, is_floor
from eval.stats import holm
from service.arms import ARMS, by_cost

OUTCOMES = ("worse", "non_inferior", "undecided")
DECIDED, INSUFFICIENT, BELOW_BASELINE = "decided", "insufficient evidence", "no arm beats the baseline"
STATUSES = (DECIDED, INSUFFICIENT, BELOW_BASELINE)


@dataclass(frozen=True)
class Verdict:
    family: str
    best: str
    worse: list[str]  # significantly worse than the best
    non_inferior: list[str]  # within the margin of the best (shown, not assumed)
    undecided: list[str]  # neither worse nor shown within the margin
    recommended: str | None  # None when the evidence does not settle it
    status: str  # one of STATUSES
    reason: str
    rule: str  # "agrees", "contradicts", "inconclusive" or "n/a"
    rule_statement: str
    margin: float
    rows_to_settle: int | None = None  # rows per family that would decide the undecided comparisons
    leading: list[str] = field(default_factory=list)  # best and non-inferior arms, cheapest first
    beats_baseline: list[str] = field(default_factory=list)  # arms significantly above the baseline
    rows_to_beat_baseline: int | None = None  # rows that would show the best arm above it, if its lead holds

    @property
    def tied_with(self) -> list[str]:
        """Arms not shown to be worse (non-inferior or undecided)."""
        return [*self.non_inferior, *self.undecided]


def outcome(comparison: dict, *, higher_is_better: bool, alpha: float = 0.05) -> str:
    """Where an arm stands against the best, from its Holm-adjusted tests: "worse" when the paired test is
    significant in the best arm's favour, "non_inferior" when the one-sided test at alpha/2 (the worse end of the
    same 95% interval) shows it within the margin, else "undecided"."""
    sign = 1 if higher_is_better else -1
    if comparison["significant"] and sign * comparison["difference"] > 0:
        return "worse"
    if comparison["non_inferiority_p_holm"] < alpha / 2:
        return "non_inferior"
    return "undecided"


def beats(comparison: dict, *, higher_is_better: bool, alpha: float = 0.05) -> bool:
    """Whether an arm's Holm-adjusted paired test against the baseline (arm `a`, baseline `b`) shows it better."""
    sign = 1 if higher_is_better else -1
    return bool(comparison.get("p_holm") is not None and comparison["p_holm"] < alpha
                and sign * (comparison["difference"] or 0.0) > 0)  # fmt: skip


def leading(best: str, outcomes: dict[str, str]) -> set[str]:
    """The arms a verdict could name: the best and those shown non-inferior to it."""
    return {best} | {arm for arm, o in outcomes.items() if o == "non_inferior"}


def gate(groups, *, alpha: float = 0.05, clean=float) -> list[dict]:
    """The baseline gate, one mechanism for the pooled report and its strata. `groups`: (leading arms, the arms'
    comparisons against the baseline, higher_is_better) per verdict. Only the leading arms' comparisons are tested
    (`tested`), Holm-adjusted together over every group, and each gets `p_holm` (through `clean`), `significant`
    and `beats`, None where untested. Returns the tested comparisons."""
    groups = list(groups)
    tested = [c for names, comparisons, _ in groups for c in comparisons if c["a"] in names]
    for c, adjusted in zip(tested, holm([c["p_value"] for c in tested]), strict=True):
        c["p_holm"], c["significant"] = clean(adjusted), adjusted < alpha
    for names, comparisons, higher in groups:
        for c in comparisons:
            c["tested"] = c["a"] in names
            if c["tested"]:
                c["beats"] = beats(c, higher_is_better=higher, alpha=alpha)
            else:
                c["p_holm"], c["significant"], c["beats"] = None, None, None
    return tested


def _labels(names) -> str:
    return ", ".join(ARMS[a].label for a in names)


def decide(
    family: str,
    scores: dict[str, float],
    outcomes: dict[str, str],
    *,
    margin: float,
    higher_is_better: bool = True,
    rows_to_settle: int | None = None,
    beats_baseline: dict[str, bool] | None = None,
    baseline: float | None = None,
    baseline_reason: str | None = None,
    rows_to_beat_baseline: int | None = None,
) -> Verdict:
    """`scores`: headline per arm; `outcomes[arm]`: "worse", "non_inferior" or "undecided" against the best
    (every scored arm but the best); `beats_baseline[arm]`: whether its test against the baseline showed it
    better (None: no baseline test, every arm eligible); `baseline`: the chance figure, or None with
    `baseline_reason` when the comparison was with the metric's floor."""
    order = by_cost(scores)
    best = sorted(order, key=lambda a: (-scores[a] if higher_is_better else scores[a], order.index(a)))[0]
    group = {o: [a for a in order if a != best and outcomes.get(a, "undecided") == o] for o in OUTCOMES}
    above = [a for a in order if beats_baseline is None or beats_baseline.get(a, False)]
    leading = by_cost([best, *group["non_inferior"]])
    eligible = [a for a in leading if a in above]
    label = ARMS[best].label
    rule, statement = _rule_check(family, best, group, order)
    if not eligible:
        against = (
            f"the chance baseline ({baseline:.3f})"
            if baseline is not None
            else f"the metric's floor (every row failed; no chance baseline: {baseline_reason or 'none'})"
        )
        shown = f"; {_labels(above)} beat it but not the leading arms" if above else ""
        need = (f"; about {rows_to_beat_baseline} rows would show {label} above it if its lead holds"
                if rows_to_beat_baseline else "")  # fmt: skip
        reason = (f"no leading arm is significantly above {against}: {label} leads with {scores[best]:.3f}"
                  f"{shown}{need}. Nothing is recommended")  # fmt: skip
        return Verdict(family, best, group["worse"], group["non_inferior"], group["undecided"], None, BELOW_BASELINE,
                       reason, rule, statement, margin, rows_to_settle, leading, above, rows_to_beat_baseline)  # fmt: skip
    pick = eligible[0]
    cheaper_unknown = [a for a in group["undecided"] if order.index(a) < order.index(pick)]
    if cheaper_unknown:
        recommended, status = None, INSUFFICIENT
        settle = f"; about {rows_to_settle} rows per family would settle it" if rows_to_settle else ""
        reason = (
            f"{label} leads ({scores[best]:.3f}) but the cheaper {_labels(cheaper_unknown)} can be shown neither "
            f"worse nor within {margin:g} of it{settle}"
        )
    else:
        recommended, status = pick, DECIDED
        if pick == best:
            reason = f"{label} scores highest ({scores[best]:.3f})"
            cheaper = [a for a in order if order.index(a) < order.index(best)]
            reason += (
                f" and every cheaper arm ({_labels(cheaper)}) is significantly worse"
                if cheaper
                else " and is the cheapest arm"
            )
        else:
            reason = (
                f"{label} scores highest ({scores[best]:.3f}) but {ARMS[pick].label} ({scores[pick]:.3f}) is shown "
                f"within {margin:g} of it and costs less"
            )
        if beats_baseline is not None:
            reason += (f", and is significantly above the chance baseline ({baseline:.3f})" if baseline is not None
                       else ", and is significantly above the metric's floor")  # fmt: skip
    return Verdict(family, best, group["worse"], group["non_inferior"], group["undecided"], recommended, status,
                   reason, rule, statement, margin, rows_to_settle, leading, above, rows_to_beat_baseline)  # fmt: skip


def _rule_check(family: str, best: str, group: dict[str, list[str]], scored: list[str]) -> tuple[str, str]:
    """Agrees only if a favoured arm wins and every other arm is significantly worse; contradicts only if
    another arm wins and every favoured arm is significantly worse; otherwise the run cannot tell."""
    entry = FAMILIES.get(family)
    if entry is None or entry.favoured is None:
        return "n/a", "the folk rule says nothing about this family"
    name = entry.rule
    if is_floor(ARMS[best]):
        return (
            "inconclusive",
            f"Cannot settle '{name}': a from-scratch floor leads, and the rule compares pre-trained arms.",
        )
    expected = {a for a in scored if entry.favours(ARMS[a])}
    if not expected:
        return "n/a", f"no arm that '{name}' favours took part in this run"
    not_worse = [a for a in (*group["non_inferior"], *group["undecided"]) if not is_floor(ARMS[a])]
    others_not_worse = [a for a in not_worse if a not in expected]
    favoured_not_worse = [a for a in not_worse if a in expected]
    if best in expected and not others_not_worse:
        return "agrees", (
            f"The data agrees with '{name}': {ARMS[best].label} is significantly better than every arm the rule does "
            "not favour."
        )
    if best not in expected and not favoured_not_worse:
        return "contradicts", (
            f"The data contradicts '{name}': {ARMS[best].label} wins and every arm the rule favours "
            f"({_labels(sorted(expected))}) is significantly worse."
        )
    undecided = others_not_worse if best in expected else favoured_not_worse
    return "inconclusive", (
        f"Cannot settle '{name}' on this many rows: {ARMS[best].label} leads but {_labels(undecided)} cannot be "
        "shown worse."
    )


def break_even_queries(training_s: float, rag_cost_ms: float, arm_cost_ms: float) -> float | None:
    """Queries after which a fine-tune's one-off training time is repaid by its cheaper answers, or None if never."""
    saving_s = (rag_cost_ms - arm_cost_ms) / 1000
    if saving_s <= 0:
        return None
    return training_s / saving_s
