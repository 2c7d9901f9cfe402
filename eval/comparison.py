"""Two runs side by side: per family and arm the paired change of the headline on the rows both runs answered,
with its interval and Holm-adjusted p-value (the report's tests, `eval.stats.compare`: exact McNemar for 0/1 scores
on independent rows, the cluster sign-flip test where rows share a document or template, a paired bootstrap
otherwise), and which changes are significant drops (regressions, for CI gating). Holm spans every change of the
comparison on purpose: the gate is one decision ("did anything drop?") over all families.

Example:
    >>> # changes = headline_changes(score_run(store, a, settings), score_run(store, b, settings))
    >>> # [f"{c.family} {c.arm}" for c in changes if c.regression]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from eval import stats
from eval.answers import ScoredRun
from eval.metrics import headline, report_families
from eval.results import balance_values, document_clusters, fold_replicates

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

    @property
    def significant(self) -> bool:
        return self.p_holm is not None and self.p_holm < ALPHA

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


def headline_changes(earlier: ScoredRun, later: ScoredRun) -> list[HeadlineChange]:
    """Every (family, arm) both runs scored, in report order, with Holm-adjusted p-values over all of them."""
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
            c = stats.compare("after", "before", xb, xa, seed, clusters=document_clusters(later.rows, common))
            raw.append((family, arm, top, xa, xb, c))
    tested = [c.p_value for *_, c in raw if c.n]  # a (family, arm) with no common rows is no test
    adjusted = iter(stats.holm(tested))
    out = []
    for family, arm, top, xa, xb, c in raw:
        p_holm = next(adjusted) if c.n else None
        out.append(HeadlineChange(
            family, arm, top.name, top.higher_is_better, _num(sum(xa) / len(xa)) if xa else None,
            _num(sum(xb) / len(xb)) if xb else None, c.n, _num(c.difference), _num(c.ci_low), _num(c.ci_high),
            _num(c.p_value) if c.n else None, _num(p_holm), c.test,
        ))  # fmt: skip
    return out


def describe_regression(c: HeadlineChange, earlier: str, later: str) -> str:
    """One line for a CI log: which family and arm dropped, by how much, and how sure."""
    return (
        f"REGRESSION {c.family} / {c.arm}: {c.metric} {c.before:.3f} -> {c.after:.3f} ({c.difference:+.3f}, 95% CI "
        f"[{c.ci_low:+.3f}, {c.ci_high:+.3f}], Holm p={c.p_holm:.3g}, {c.test}, n={c.n}) from {earlier} to {later}"
    )
