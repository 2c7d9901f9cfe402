"""Two runs side by side: per family and arm the paired change of the headline on the rows both runs answered,
with its interval and Holm-adjusted p-value (the report's tests, `ragft.eval.scoring.stats.compare`: exact McNemar for 0/1 scores
on independent rows, the cluster sign-flip test where rows share a document or template, the sign-flip test for
graded scores), and the CI gate.

The gate asks "did any headline drop by more than the margin?" and passes only when every headline of the later
run is *shown* within the family's margin of the earlier run's (`stats.non_inferiority_p`, Tango's score test for
0/1 scores, one-sided at 5%). Passing needs every one of those tests, so it is an intersection-union test (Berger
1982) and needs no multiplicity adjustment. A gate on a significant drop passed whenever the rows were too few to
show one (4 rows worse of 40 never fail Holm over ~40 tests); this one fails then, and says how many rows would
settle it. Significant drops (Holm over every change) are still printed, as information.

Example:
    >>> # changes = headline_changes(score_run(store, a, settings), score_run(store, b, settings))
    >>> # [f"{c.family} {c.arm}" for c in changes if not c.held]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ragft.eval.reporting.answers import ScoredRun
from ragft.eval.scoring import stats
from ragft.eval.scoring.metrics import headline, report_families
from ragft.eval.scoring.results import balance_values, document_clusters, fold_replicates

ALPHA = stats.ALPHA


@dataclass(frozen=True)
class HeadlineChange:
    """Arm `arm`'s headline on family `family`: later run minus earlier run, paired on their common rows."""

    family: str
    arm: str
    metric: str
    higher_is_better: bool
    before: float | None  # the earlier run's mean on the common rows
    after: float | None
    n: int  # rows both runs scored
    difference: float | None  # after minus before
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    p_holm: float | None
    test: str
    margin: float | None = None  # how far the headline may drop and still pass the gate
    within_p: float | None = None  # one-sided p that the later run is at most `margin` worse
    rows_to_hold: int | None = None  # rows the margin test needs for 80% power at this discordance (0/1 scores)

    @property
    def significant(self) -> bool:
        return self.p_holm is not None and self.p_holm < ALPHA

    @property
    def held(self) -> bool:
        """The gate's test: the later run is shown at most the margin worse (one-sided, 5%)."""
        return self.within_p is not None and self.within_p < ALPHA

    @property
    def regression(self) -> bool:
        """A significant change for the worse (Holm-adjusted over every change of the comparison)."""
        if not self.significant or self.difference is None:
            return False
        return self.difference < 0 if self.higher_is_better else self.difference > 0


def _headline_values(scored: ScoredRun) -> dict:
    """Row values as the report reads them: extra seeds folded into their arm, balanced metrics reweighted."""
    folded, replicates = fold_replicates(scored.values)
    return balance_values(folded, replicates, scored.rows)


def _num(x: float) -> float | None:
    return None if x is None or math.isnan(x) else round(float(x), 4)


def headline_changes(earlier: ScoredRun, later: ScoredRun, margin: float = 0.10) -> list[HeadlineChange]:
    """Every (family, arm) both runs scored, in report order, with Holm-adjusted p-values over all of them and the
    gate's margin test (`margin`: a share of each headline's scale, as the report's flat margin)."""
    va, vb = _headline_values(earlier), _headline_values(later)
    seed = later.spec.seed
    families = [f for f in report_families() if f in earlier.spec.families and f in later.spec.families]
    raw = []
    for family in families:
        top = headline(family)
        arms = sorted({a for a, m in va if m == top.name} & {a for a, m in vb if m == top.name})
        for arm in arms:
            a_rows, b_rows = va[(arm, top.name)], vb[(arm, top.name)]
            common = sorted(set(a_rows) & set(b_rows))
            xa = [float(a_rows[i]) for i in common]
            xb = [float(b_rows[i]) for i in common]
            clusters = document_clusters(later.rows, common)
            c = stats.compare("after", "before", xb, xa, seed, clusters=clusters)
            low, high = top.figure_range
            m = round(margin * (high - low), 4)
            within = stats.non_inferiority_p(xb, xa, m, seed, higher_is_better=top.higher_is_better,
                                             clusters=clusters)[0] if common else None  # fmt: skip
            raw.append((family, arm, top, xa, xb, c, m, within, _rows_to_hold(xa, xb, m, clusters)))
    tested = [r[5].p_value for r in raw if r[5].n]  # a (family, arm) with no common rows is no test
    adjusted = iter(stats.holm(tested))
    out = []
    for family, arm, top, xa, xb, c, m, within, rows in raw:
        p_holm = next(adjusted) if c.n else None
        out.append(HeadlineChange(
            family, arm, top.name, top.higher_is_better, _num(sum(xa) / len(xa)) if xa else None,
            _num(sum(xb) / len(xb)) if xb else None, c.n, _num(c.difference), _num(c.ci_low), _num(c.ci_high),
            _num(c.p_value) if c.n else None, _num(p_holm), c.test, m, _num(within), rows,
        ))  # fmt: skip
    return out


def _rows_to_hold(before: list[float], after: list[float], margin: float, clusters) -> int | None:
    """Rows the gate's margin test needs (80% power, one-sided 5%) for two equally good runs at the discordance
    seen here (at least 5%), times the design effect of clustered rows; None for graded scores."""
    if not before or not (stats.is_binary(before) and stats.is_binary(after)):
        return None
    discordance = max(0.05, sum(a != b for a, b in zip(before, after, strict=True)) / len(before))
    diffs = [b - a for a, b in zip(before, after, strict=True)]
    deff = stats.design_effect(diffs, clusters) if clusters is not None else 1.0
    return stats.rows_for_margin(margin, discordance=discordance, alpha=ALPHA, design_effect=deff)


def describe_gate(c: HeadlineChange, earlier: str, later: str) -> str:
    """One line for a CI log: a headline not shown within the margin, by how much it moved, and what would settle it."""
    settle = f"; about {c.rows_to_hold} rows would settle it" if c.rows_to_hold and c.rows_to_hold > c.n else ""
    return (
        f"NOT SHOWN WITHIN MARGIN {c.family} / {c.arm}: {c.metric} {c.before:.3f} -> {c.after:.3f} "
        f"({c.difference:+.3f}, margin {c.margin:g}, one-sided p={c.within_p:.3g}, n={c.n}) from {earlier} to "
        f"{later}{settle}"
    )


def describe_regression(c: HeadlineChange, earlier: str, later: str) -> str:
    """One line for a CI log: which family and arm dropped, by how much, and how sure."""
    return (
        f"REGRESSION {c.family} / {c.arm}: {c.metric} {c.before:.3f} -> {c.after:.3f} ({c.difference:+.3f}, 95% CI "
        f"[{c.ci_low:+.3f}, {c.ci_high:+.3f}], Holm p={c.p_holm:.3g}, {c.test}, n={c.n}) from {earlier} to {later}"
    )
