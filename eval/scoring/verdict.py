"""Deciding each family: which arm is best relative to the others, and whether it is above chance.

A family gets two answers, from tests computed on its own rows only:

1. **Relative**: an arm can be recommended only when it is *shown within the margin of, or better than, every
   other arm*: for every other arm Y, either Y is shown worse than it (the paired test, Holm-adjusted over the
   family's pairwise tests) or it is shown at most `margin` below Y (the non-inferiority test). Of the arms that
   qualify (`candidates`), the cheapest is picked (`cost_rank`). When none qualifies the verdict is
   "insufficient evidence": a lead alone is never a decision, and swapping two arms' scores cannot change the
   status (the rule reads every pair both ways). This is Hsu's multiple comparisons with the best (MCB; Hsu 1996,
   "Multiple Comparisons", ch. 4): an arm is recommended only if its lower bound against every other arm is
   above -margin. The recommendation is wrong only if an arm more than `margin` below the true best is shown
   within the margin of it, one of k - 1 comparisons with that (unknown) best, so each non-inferiority test runs
   one-sided at 0.025 / (k - 1) (Bonferroni over those k - 1, as MCB does).
2. **Above chance**: the arms a verdict could name (the candidates, and the best when there are none) are tested
   one-sided at 5% against the family's chance baseline (`ragft.eval.scoring.baseline`: a constant guess chosen on train
   rows), Holm over those tests of the family. Only an arm above it is recommended; when the leader is not, the
   verdict is "no arm beats the baseline". Where no guess could be chosen the arms are checked against the
   metric's floor (every row failed), which can stop a recommendation (every arm at 0) but never make one.

A family that measures a side effect against a reference arm (general: forgetting, against base) recommends
nothing: each arm whose weights changed is tested against base, both ways (significantly below it: it forgets;
shown within the margin of it; or undecided).

The folk rule "RAG for knowledge, fine-tuning for behaviour" is a hypothesis: each family's entry in
`eval/families.py` says which arms it favours (by their facts). The data agrees with it only if a favoured arm
is best, above chance, and every other arm is significantly worse; contradicts it only if another arm is best,
above chance, and every favoured arm is significantly worse; otherwise it cannot tell. From-scratch floors take
no part in the rule.

Example:
    >>> v = decide("knowledge", {"base": 0.1, "rag": 0.8}, {"base": "worse"}, margin=0.1)
    >>> v.best, v.recommended, v.status, v.rule
    ('rag', 'rag', 'decided', 'agrees')
    >>> decide("knowledge", {"base": 0.5, "rag": 0.6}, {"base": "undecided"}, margin=0.1).status
    'insufficient evidence'
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from ragft.eval.families import FAMILIES, is_floor
from ragft.eval.scoring import stats
from ragft.service.arms import ARMS, by_cost

OUTCOMES = ("worse", "non_inferior", "undecided")
DECIDED, INSUFFICIENT, BELOW_BASELINE = "decided", "insufficient evidence", "no arm beats the baseline"
PROBE = "compared with base"  # a side-effect family (forgetting): nothing to recommend
STATUSES = (DECIDED, INSUFFICIENT, BELOW_BASELINE, PROBE)


@dataclass(frozen=True)
class Pair:
    """What the family's tests showed about two arms: `worse` is the arm the Holm-adjusted paired test shows
    worse (None: neither), `a_within` that a is shown at most the margin below b (or better), `b_within` the
    converse."""

    a: str
    b: str
    worse: str | None = None
    a_within: bool = False
    b_within: bool = False

    def shown_worse(self, loser: str, winner: str) -> bool:
        return self.worse == loser and {loser, winner} == {self.a, self.b}

    def within(self, arm: str, other: str) -> bool:
        """`arm` shown no more than the margin below `other`."""
        if (arm, other) == (self.a, self.b):
            return self.a_within or self.worse == other
        if (arm, other) == (self.b, self.a):
            return self.b_within or self.worse == other
        return False


@dataclass(frozen=True)
class Verdict:
    family: str
    best: str
    worse: list[str]  # significantly worse than the best
    non_inferior: list[str]  # shown within the margin of the best (not assumed from a tie)
    undecided: list[str]  # neither worse nor shown within the margin of the best
    recommended: str | None  # None when the evidence does not settle it
    status: str  # one of STATUSES
    reason: str
    rule: str  # "agrees", "contradicts", "inconclusive" or "n/a"
    rule_statement: str
    margin: float
    rows_to_settle: int | None = None  # rows per family at which the margin tests reach 80% power
    leading: list[str] = field(default_factory=list)  # the candidates: arms shown within the margin of every arm
    beats_baseline: list[str] = field(default_factory=list)  # arms shown above the baseline
    rows_to_beat_baseline: int | None = None  # rows that would show the best arm above it, if its lead holds
    relative: str = INSUFFICIENT  # answer 1: DECIDED when some arm is shown within the margin of every arm
    above_chance: str = "not tested"  # answer 2: "above chance", "not shown above chance", "no chance baseline", ...
    blocking: list[tuple[str, str]] = field(default_factory=list)  # (arm, other): why the best is no candidate

    @property
    def tied_with(self) -> list[str]:
        """Arms not shown to be worse than the best (non-inferior or undecided)."""
        return [*self.non_inferior, *self.undecided]


def pairs_from_outcomes(best: str, outcomes: dict[str, str]) -> list[Pair]:
    """The pairs an outcome-against-the-best table states (nothing is known about pairs without the best)."""
    return [Pair(best, arm, worse=arm if o == "worse" else None, b_within=o == "non_inferior")
            for arm, o in outcomes.items() if arm != best]  # fmt: skip


def candidates(arms: list[str], pairs: list[Pair]) -> list[str]:
    """Arms shown within the margin of, or better than, every other arm, cheapest first."""
    found = {(p.a, p.b): p for p in pairs} | {(p.b, p.a): p for p in pairs}
    return [x for x in by_cost(arms)
            if all((x, y) in found and found[(x, y)].within(x, y) for y in arms if y != x)]  # fmt: skip


def best_arm(scores: dict[str, float], higher_is_better: bool) -> str:
    """The highest-scoring arm in the metric's direction; a tie goes to the cheaper arm."""
    order = by_cost(scores)
    return sorted(order, key=lambda a: (-scores[a] if higher_is_better else scores[a], order.index(a)))[0]


def _labels(names) -> str:
    return ", ".join(ARMS[a].label for a in names) or "none"


def decide(
    family: str,
    scores: dict[str, float],
    outcomes: dict[str, str] | None = None,
    *,
    margin: float,
    pairs: list[Pair] | None = None,
    higher_is_better: bool = True,
    rows_to_settle: int | None = None,
    beats_baseline: dict[str, bool] | None = None,
    baseline: float | None = None,
    baseline_reason: str | None = None,
    rows_to_beat_baseline: int | None = None,
    reference_arm: str | None = None,
) -> Verdict:
    """`scores`: headline per arm; `pairs`: what the family's tests showed for each pair of arms (or `outcomes`,
    each arm's "worse" / "non_inferior" / "undecided" against the best, when only those were tested);
    `beats_baseline[arm]`: whether its one-sided test showed it above the baseline (None: no baseline test);
    `baseline`: the chance figure, or None with `baseline_reason` when the reference was the metric's floor;
    `reference_arm`: a side-effect family's reference (general: base), which makes it a probe."""
    order = by_cost(scores)
    best = best_arm(scores, higher_is_better)
    if pairs is None:
        pairs = pairs_from_outcomes(best, outcomes or {})
    by_pair = {(p.a, p.b): p for p in pairs} | {(p.b, p.a): p for p in pairs}

    def against_best(arm: str) -> str:
        p = by_pair.get((arm, best))
        if p is None:
            return "undecided"
        return "worse" if p.shown_worse(arm, best) else "non_inferior" if p.within(arm, best) else "undecided"

    group = {o: [a for a in order if a != best and against_best(a) == o] for o in OUTCOMES}
    rule, statement = _rule_check(family, best, group, order, beats_baseline)
    if reference_arm is not None and reference_arm in scores:
        return _probe(family, scores, order, by_pair, reference_arm, margin, rule, statement, rows_to_settle)
    if reference_arm is not None:  # a side-effect family without its reference: nothing to measure against
        reason = (f"{ARMS[reference_arm].label} did not answer this family, so what the other arms lost against it "
                  "cannot be measured; a side effect is measured here, so nothing is recommended")  # fmt: skip
        return Verdict(family, best, [], [], [a for a in order if a != best], None, PROBE, reason, rule, statement,
                       margin, rows_to_settle, [], [], None, INSUFFICIENT, "no chance baseline")  # fmt: skip
    shown = candidates(list(scores), pairs)
    above = [a for a in order if beats_baseline is not None and beats_baseline.get(a, False)]
    floor = baseline is None
    eligible = [a for a in shown if beats_baseline is None or a in above]
    label = ARMS[best].label
    blocking = [
        (best, y) for y in order if y != best and not (by_pair.get((best, y)) and by_pair[(best, y)].within(best, y))
    ]
    common = dict(family=family, best=best, worse=group["worse"], non_inferior=group["non_inferior"],
                  undecided=group["undecided"], rule=rule, rule_statement=statement, margin=margin,
                  rows_to_settle=rows_to_settle, leading=shown, beats_baseline=above,
                  rows_to_beat_baseline=rows_to_beat_baseline, relative=DECIDED if shown else INSUFFICIENT,
                  blocking=blocking)  # fmt: skip
    against = (f"the chance baseline ({baseline:.3f})" if not floor else
               f"the metric's floor (no chance baseline: {baseline_reason or 'none'})")  # fmt: skip
    chance_answer = ("not tested" if beats_baseline is None else
                     ("above chance" if eligible or (not shown and best in above) else "not shown above chance")
                     if not floor else "no chance baseline")  # fmt: skip
    if beats_baseline is not None and not any(a in above for a in [*shown, best]):
        need = (f"; about {rows_to_beat_baseline} rows would show {label} above it if its lead holds"
                if rows_to_beat_baseline else "")  # fmt: skip
        reason = (f"{label} leads with {scores[best]:.3f} but is not shown above {against} (one-sided paired test at "
                  f"5%, Holm over the family's baseline tests){need}. Nothing is recommended")  # fmt: skip
        return Verdict(recommended=None, status=BELOW_BASELINE, reason=reason,
                       above_chance="not shown above chance" if not floor else "not above the floor", **common)  # fmt: skip
    if not shown:
        settle = (
            f"; about {rows_to_settle} rows per family would give each margin test 80% power for two equally good arms"
            if rows_to_settle
            else ""
        )
        reason = (f"{label} leads ({scores[best]:.3f}) but no arm is shown within {margin:g} of every arm not shown "
                  f"worse than it: {label} is neither shown better than nor within {margin:g} of "
                  f"{_labels([y for _, y in blocking])}{settle}")  # fmt: skip
        return Verdict(recommended=None, status=INSUFFICIENT, reason=reason, above_chance=chance_answer, **common)
    if not eligible:
        reason = (f"{_labels(shown)} {'is' if len(shown) == 1 else 'are'} shown within {margin:g} of every other arm "
                  f"but not above {against}; {label} leads with {scores[best]:.3f}. Nothing is recommended")  # fmt: skip
        return Verdict(recommended=None, status=INSUFFICIENT, reason=reason, above_chance=chance_answer, **common)
    pick = eligible[0]
    better = [y for y in order if y != pick and by_pair[(pick, y)].shown_worse(y, pick)]
    within = [y for y in order if y != pick and y not in better]
    reason = f"{ARMS[pick].label} ({scores[pick]:.3f})"
    reason += f" is significantly better than {_labels(better)}" if better else ""
    reason += (" and" if better and within else "") + (
        f" is shown within {margin:g} of {_labels(within)}" if within else ""
    )
    if pick != best:
        cheaper = ARMS[pick].cost_rank < ARMS[best].cost_rank
        reason += (
            f" ({label} scores highest, {scores[best]:.3f}{'; ' + ARMS[pick].label + ' costs less' if cheaper else ''})"
        )
    if beats_baseline is not None and floor:
        reason += (f"; no chance baseline ({baseline_reason or 'none'}), so whether it beats a guess is not known, "
                   "only that it is above the metric's floor")  # fmt: skip
    elif beats_baseline is not None:
        reason += f"; it is significantly above the chance baseline ({baseline:.3f})"
    return Verdict(recommended=pick, status=DECIDED, reason=reason, above_chance=chance_answer, **common)


def _probe(family, scores, order, by_pair, reference, margin, rule, statement, rows_to_settle) -> Verdict:
    """A side-effect family: each arm against the reference, nothing recommended."""
    others = [a for a in order if a != reference]
    pair = {a: by_pair.get((a, reference)) for a in others}
    below = [a for a in others if pair[a] and pair[a].shown_worse(a, reference)]
    above = [a for a in others if pair[a] and pair[a].shown_worse(reference, a)]
    within = [a for a in others if a not in below and a not in above and pair[a] and pair[a].within(a, reference)]
    open_ = [a for a in others if a not in below and a not in above and a not in within]
    ref = ARMS[reference].label
    parts = []
    if below:
        parts.append(f"{_labels(below)} significantly below {ref} (forgets)")
    if above:
        parts.append(f"{_labels(above)} significantly above {ref}")
    if within:
        parts.append(f"{_labels(within)} shown within {margin:g} of {ref}")
    if open_:
        parts.append(f"{_labels(open_)} neither shown below {ref} nor within {margin:g} of it")
    reason = (f"each arm whose weights changed against {ref} ({scores[reference]:.3f}): " + "; ".join(parts)
              if parts else f"no arm to compare with {ref}")  # fmt: skip
    reason += ". A side effect is measured here, so nothing is recommended"
    if open_ and rows_to_settle:
        reason += f"; about {rows_to_settle} rows would give each margin test 80% power for two equally good arms"
    return Verdict(
        family,
        reference,
        below,
        [*above, *within],
        open_,
        None,
        PROBE,
        reason,
        rule,
        statement,
        margin,
        rows_to_settle,
        [],
        [],
        None,
        DECIDED if not open_ else INSUFFICIENT,
        "no chance baseline",
    )


def _rule_check(family: str, best: str, group: dict[str, list[str]], scored: list[str],
                beats_baseline: dict[str, bool] | None = None) -> tuple[str, str]:  # fmt: skip
    """Agrees only if a favoured arm wins, is above chance, and every other arm is significantly worse;
    contradicts only if another arm wins, is above chance, and every favoured arm is significantly worse;
    otherwise the run cannot tell."""
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
    if beats_baseline is not None and not beats_baseline.get(best, False):
        return "inconclusive", (f"Cannot settle '{name}': {ARMS[best].label} leads but is not shown above the "
                                "baseline.")  # fmt: skip
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


BREAK_EVEN = (
    "break_even_queries_vs_"  # + the reference arm (`ragft.service.arms.break_even_reference`): a cost entry's key
)
TOKENS_SAVED = "prompt_tokens_saved_vs_"  # + the same arm


def break_even_arm(costs: dict) -> str | None:
    """The arm a run's cost entries weigh training time against, read from their keys (None: none did)."""
    return next((k.removeprefix(BREAK_EVEN) for c in costs.values() for k in c if k.startswith(BREAK_EVEN)), None)


def break_even_queries(training_s: float, rag_cost_ms: float, arm_cost_ms: float) -> float | None:
    """Queries after which a fine-tune's one-off training time is repaid by its cheaper answers, or None if never."""
    saving_s = (rag_cost_ms - arm_cost_ms) / 1000
    if saving_s <= 0:
        return None
    return training_s / saving_s


# --- the family's tests ------------------------------------------------------------------------------------------


def _round(x) -> float | None:
    return None if x is None or x != x else round(float(x), 4)


def _common(values: dict[str, dict[str, float]], a: str, b: str) -> list[str]:
    return sorted(set(values.get(a, {})) & set(values.get(b, {})))


def _by_seed(arm: str, ids: list[str], values, replicates) -> list[list[float]]:
    """Row values per training seed on `ids` (one row of the folded values for an arm trained once)."""
    if arm in replicates:
        order, runs = replicates[arm]
        at = {row: i for i, row in enumerate(order)}
        return [[run[at[i]] for i in ids] for run in runs]
    return [[float(values[arm][i]) for i in ids]]


def _pair_test(a: str, b: str, values, *, higher: bool, margin: float, seed: int, clusters_of, replicates) -> dict:
    """One pair on the rows both scored: the two-sided paired test (difference a - b), and each arm's one-sided
    non-inferiority test against the other."""
    ids = _common(values, a, b)
    xa, xb = [float(values[a][i]) for i in ids], [float(values[b][i]) for i in ids]
    clusters = clusters_of(ids) if ids else None
    sign = 1.0 if higher else -1.0
    if ids and (a in replicates or b in replicates):
        c, boot = stats.replicated_compare(a, b, _by_seed(a, ids, values, replicates),
                                           _by_seed(b, ids, values, replicates), seed, clusters=clusters)  # fmt: skip
        a_p, b_p = float((sign * boot <= -margin).mean()), float((sign * boot >= margin).mean())
        ni_test = c.test
    else:
        c = stats.compare(a, b, xa, xb, seed, clusters=clusters)
        a_p, ni_test = stats.non_inferiority_p(xa, xb, margin, seed, higher_is_better=higher, clusters=clusters)
        b_p, _ = stats.non_inferiority_p(xb, xa, margin, seed, higher_is_better=higher, clusters=clusters)
    diff = np.subtract(xa, xb) if ids else np.zeros(0)
    return {"a": a, "b": b, "n": c.n, "difference": _round(c.difference), "ci_low": _round(c.ci_low),
            "ci_high": _round(c.ci_high), "p_value": _round(c.p_value), "test": c.test,
            "discordance": _round(float((diff != 0).mean())) if ids else None,
            "design_effect": _round(stats.design_effect(diff, clusters)) if ids and clusters else 1.0,
            "a_within_p": _round(a_p), "b_within_p": _round(b_p), "non_inferiority_test": ni_test,
            "_sd": float(np.std(diff, ddof=1)) if len(ids) > 1 else None,
            "_size2": float((np.unique([str(k) for k in clusters], return_counts=True)[1] ** 2).sum() / len(ids))
            if ids and clusters
            else 1.0,
            "_binary": bool(ids) and stats.is_binary(xa) and stats.is_binary(xb)}  # fmt: skip


def _power(pairs: list[dict], n: int, margin: float, alpha: float, ni_alpha: float) -> dict:
    """What this many rows can see with the tests the family ran, at the level it ran them: the minimum
    detectable difference at 80% power at the strictest Holm step (alpha / tests; exact McNemar power, or where rows
    share documents the sign-flip test's `stats.clustered_power`), and the rows at which the margin test (Tango's
    score test at its Bonferroni level, times the design effect) reaches 80% power for two equally good arms."""
    if not pairs:
        return {"rows": n, "mdd": None, "rows_for_margin": None}
    deff = round(float(np.median([p["design_effect"] or 1.0 for p in pairs])), 2)
    n_eff = max(1, int(n / deff))
    tests = sorted({p["test"] for p in pairs})
    common = {"rows": n, "effective_rows": n_eff, "design_effect": _round(deff), "tests": tests,
              "alpha": _round(alpha), "margin_alpha": _round(ni_alpha)}  # fmt: skip
    if all(p["_binary"] for p in pairs):
        shares = [p["discordance"] for p in pairs if p["discordance"]]
        disc = round(float(np.median(shares)), 2) if shares else None  # planning figures: two decimals suffice
        size2 = round(float(np.median([p["_size2"] for p in pairs])), 2)
        clustered = {"design_effect": deff, "cluster_size": size2} if deff > 1 or size2 > 1 else {}
        mdd = stats.minimum_detectable_difference(n, discordance=disc, alpha=alpha, **clustered)
        best_case = stats.minimum_detectable_difference(n, alpha=alpha, **clustered)
        needed = stats.rows_for_margin(margin, discordance=max(disc or 0.0, margin), alpha=ni_alpha, design_effect=deff)
        return common | {"mdd": _round(mdd if math.isfinite(mdd) else None), "discordance": _round(disc),
                         "mdd_best_case": _round(best_case if math.isfinite(best_case) else None),
                         "rows_for_margin": needed}  # fmt: skip
    sds = [p["_sd"] for p in pairs if p["_sd"]]
    sd = float(np.median(sds)) if sds else None
    mdd = stats.minimum_detectable_difference(n_eff, sd=sd, alpha=alpha) if sd else None
    needed = stats.rows_needed(margin, sd=sd, alpha=2 * ni_alpha) if sd else None
    return common | {"mdd": _round(mdd), "sd": _round(sd),
                     "rows_for_margin": math.ceil(needed * deff) if needed else None}  # fmt: skip


def judge_family(
    family: str,
    values: dict[str, dict[str, float]],
    *,
    higher_is_better: bool,
    margin: float,
    seed: int,
    clusters_of=lambda ids: None,
    replicates: dict | None = None,
    reference: dict[str, float] | None = None,
    reference_kind: str = "chance",
    baseline_value: float | None = None,
    baseline_reason: str | None = None,
    scores: dict[str, float] | None = None,
    alpha: float = stats.ALPHA,
) -> dict:
    """Every test a family's verdict reads, on the family's rows alone, and the verdict.

    `values[arm]`: row id -> headline value (seed means for an arm trained k times, whose per-seed values are
    `replicates[arm] = (row ids, [values per seed])`); `clusters_of(ids)`: the rows' clusters (None: independent);
    `reference`: the chance baseline's (or the metric's floor's) row values. Returns {"pairs", "comparisons",
    "forgetting_vs_base", "baseline_comparisons", "power", "verdict" (a Verdict), "single_seed"}; p-values are
    adjusted within the family only, so no other family's rows can move its verdict."""
    replicates = replicates or {}
    scored = [a for a in by_cost(values) if values[a]]
    out: dict = {"pairs": [], "comparisons": [], "forgetting_vs_base": {}, "baseline_comparisons": [],
                 "power": {"rows": 0}, "verdict": None,
                 "single_seed": [a for a in scored if ARMS[a].adapter and a not in replicates]}  # fmt: skip
    if not scored:
        return out
    scores = {a: scores[a] if scores and a in scores else float(np.mean(list(values[a].values()))) for a in scored}
    best = best_arm(scores, higher_is_better)
    ref_arm = FAMILIES[family].reference_arm if family in FAMILIES else None
    probe = ref_arm in scored
    ranked = sorted(scored, key=lambda a: (-scores[a] if higher_is_better else scores[a], by_cost(scored).index(a)))
    if probe:
        couples = [(a, ref_arm) for a in scored if a != ref_arm]
    else:
        couples = [(x, y) for i, x in enumerate(ranked) for y in ranked[i + 1 :]]
    pairs = [_pair_test(a, b, values, higher=higher_is_better, margin=margin, seed=seed, clusters_of=clusters_of,
                        replicates=replicates) for a, b in couples]  # fmt: skip
    # Holm over this family's pairwise tests; each margin test one-sided at alpha/2 over the k - 1 comparisons
    # with the (unknown) best, Bonferroni (MCB)
    comparisons_with_best = max(1, len(scored) - 1)
    for p, adjusted in zip(pairs, stats.holm([p["p_value"] for p in pairs]), strict=True):
        p["p_holm"], p["significant"] = _round(adjusted), adjusted < alpha
        sign = 1 if higher_is_better else -1
        p["worse"] = (p["b"] if sign * p["difference"] > 0 else p["a"]) if p["significant"] else None
        p["a_within_p_adjusted"] = _round(min(1.0, p["a_within_p"] * comparisons_with_best))
        p["b_within_p_adjusted"] = _round(min(1.0, p["b_within_p"] * comparisons_with_best))
        p["a_within"] = p["a_within_p"] * comparisons_with_best < alpha / 2
        p["b_within"] = p["b_within_p"] * comparisons_with_best < alpha / 2
    known = [Pair(p["a"], p["b"], p["worse"], p["a_within"], p["b_within"]) for p in pairs]
    out["pairs"] = [{k: v for k, v in p.items() if not k.startswith("_")} for p in pairs]
    if probe:
        out["forgetting_vs_base"] = {p["a"]: p for p in out["pairs"]}
    else:
        for p in out["pairs"]:  # the best against each other arm, as the report's table reads them
            if best in (p["a"], p["b"]):
                other = p["b"] if p["a"] == best else p["a"]
                flip = p["a"] != best
                own = {k: v for k, v in p.items() if not k.startswith(("a_within", "b_within"))}
                out["comparisons"].append(own | {
                    "a": best, "b": other, "difference": -p["difference"] if flip else p["difference"],
                    "ci_low": -p["ci_high"] if flip else p["ci_low"], "ci_high": -p["ci_low"] if flip else p["ci_high"],
                    "non_inferiority_p": p["a_within_p"] if flip else p["b_within_p"],
                    "non_inferiority_p_adjusted": p["a_within_p_adjusted"] if flip else p["b_within_p_adjusted"]})  # fmt: skip
    n = len(values[best])
    out["power"] = _power([p for p in pairs if best in (p["a"], p["b"])] or pairs, n, margin,
                          alpha / max(1, len(pairs)), alpha / 2 / comparisons_with_best)  # fmt: skip
    beats, rows_to_show = None, None
    if reference is not None and ref_arm is None:
        shown = candidates(scored, known)
        tested = list(dict.fromkeys([*shown, best])) if shown else [best]
        against = []
        for arm in scored:
            ids = sorted(set(values[arm]) & set(reference))
            if not ids:
                continue
            xa, xr = [float(values[arm][i]) for i in ids], [float(reference[i]) for i in ids]
            clusters = clusters_of(ids)
            if arm in replicates:
                c, boot = stats.replicated_compare(arm, "chance", _by_seed(arm, ids, values, replicates), [xr], seed,
                                                   clusters=clusters)  # fmt: skip
                one_sided = float(max(((1 if higher_is_better else -1) * boot <= 0).mean(), 1 / len(boot)))
            else:
                c = stats.compare(arm, "chance", xa, xr, seed, clusters=clusters)
                one_sided = stats.one_sided_p(xa, xr, seed, higher_is_better=higher_is_better, clusters=clusters)
            diff = np.subtract(xa, xr)
            against.append({"a": arm, "b": "chance", "n": c.n, "difference": _round(c.difference),
                            "ci_low": _round(c.ci_low), "ci_high": _round(c.ci_high), "p_value": _round(one_sided),
                            "test": c.test + " (one-sided)", "discordance": _round(float((diff != 0).mean())),
                            "tested": arm in tested, "_binary": stats.is_binary(xa) and stats.is_binary(xr),
                            "_sd": float(np.std(diff, ddof=1)) if len(ids) > 1 else None})  # fmt: skip
        gated = [c for c in against if c["tested"]]
        for c, adjusted in zip(gated, stats.holm([c["p_value"] for c in gated]), strict=True):
            sign = 1 if higher_is_better else -1
            c["p_holm"], c["significant"] = _round(adjusted), adjusted < alpha
            c["beats"] = bool(adjusted < alpha and sign * (c["difference"] or 0.0) > 0)
        for c in against:
            if not c["tested"]:
                c["p_holm"], c["significant"], c["beats"] = None, None, None
            gap = (1 if higher_is_better else -1) * (c["difference"] or 0.0)
            level = 2 * alpha / max(1, len(gated))  # a one-sided test at alpha / tests, as a two-sided level
            if gap <= 0 or c["n"] < 2:
                c["rows_to_show"] = None
            elif c.pop("_binary"):
                c["rows_to_show"] = stats.rows_needed(gap, discordance=max(c["discordance"] or 0.0, gap), alpha=level)
            else:
                c["rows_to_show"] = stats.rows_needed(gap, sd=c["_sd"], alpha=level) if c["_sd"] else None
            c.pop("_binary", None), c.pop("_sd", None)
        out["baseline_comparisons"] = against
        beats = {c["a"]: bool(c["beats"]) for c in against if c["tested"]}
        rows_to_show = next((c["rows_to_show"] for c in against if c["a"] == best), None)
    out["verdict"] = decide(
        family, scores, margin=margin, pairs=known, higher_is_better=higher_is_better,
        rows_to_settle=out["power"].get("rows_for_margin"), beats_baseline=beats,
        baseline=baseline_value if reference_kind == "chance" else None, baseline_reason=baseline_reason,
        rows_to_beat_baseline=rows_to_show, reference_arm=ref_arm)  # fmt: skip
    return out


def family_margin(flat: float, share: float | None, best: float | None, chance: float | None,
                  higher_is_better: bool = True, scale: float = 1.0) -> tuple[float, str]:  # fmt: skip
    """The family's non-inferiority margin and how it was set: `share` of the best arm's lead over the chance
    baseline when that is asked for and the lead is positive (a preserved fraction of the effect, as the FDA's 2016
    guidance on non-inferiority trials sets M2 from M1), else the flat margin, a share of the headline's scale
    (`scale`: the width of `Metric.figure_range`, 1 for rates; 1.5 for abstention's three-way score, so 0.10 of
    the scale is 0.15 there). The lead is the observed one, so a share margin is read from the data."""
    fixed = round(flat * scale, 4)
    said = "flat" if scale == 1 else f"flat ({flat:g} of the headline's scale, {scale:g})"
    if share is None or best is None or chance is None:
        return fixed, said
    lead = (best - chance) if higher_is_better else (chance - best)
    if lead <= 0:
        return fixed, f"{said}: the best arm is not above the chance baseline"
    return round(share * lead, 4), f"{share:g} of the best arm's lead over chance ({lead:.3f})"


def verdict_dict(v: Verdict) -> dict:
    """A verdict as results.json stores it (schema 4; every schema-3 key kept)."""
    return {"best": v.best, "worse": v.worse, "non_inferior": v.non_inferior, "undecided": v.undecided,
            "tied_with": v.tied_with, "recommended": v.recommended, "status": v.status, "reason": v.reason,
            "rule": v.rule, "rule_statement": v.rule_statement, "margin": v.margin, "rows_to_settle": v.rows_to_settle,
            "beats_baseline": v.beats_baseline, "rows_to_beat_baseline": v.rows_to_beat_baseline,
            "candidates": v.leading, "relative": v.relative, "above_chance": v.above_chance,
            "blocking": [list(b) for b in v.blocking]}  # fmt: skip
