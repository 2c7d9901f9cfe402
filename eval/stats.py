"""Confidence intervals and paired comparisons, seeded so a rerun gives the same numbers.

Intervals are 95% percentile bootstraps from `scipy.stats.bootstrap` (percentile rather
than BCa: BCa is undefined when every row scores the same, common with 0/1 metrics on
small samples). Two arms are compared on the same rows: exact McNemar (a binomial test on
the discordant pairs) when both metrics are 0/1, else a paired bootstrap of the mean
difference.

Example:
    >>> ci = interval([1, 0, 1, 1], seed=0)
    >>> ci.value, ci.n
    (0.75, 4)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 2000


@dataclass(frozen=True)
class Interval:
    value: float
    ci_low: float
    ci_high: float
    n: int


@dataclass(frozen=True)
class Comparison:
    """Arm a minus arm b on the rows both answered."""

    a: str
    b: str
    n: int
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    test: str  # "mcnemar-exact" or "paired-bootstrap"

    @property
    def significant(self) -> bool:
        return self.p_value < 1 - CONFIDENCE


def interval(values: Sequence, seed: int, aggregate: Callable[[Sequence], float] | None = None) -> Interval:
    """The figure and its 95% bootstrap interval; `aggregate` replaces the mean (e.g. macro-F1 over pairs)."""
    n = len(values)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    if aggregate is None:
        data = np.asarray(values, dtype=float)
        value = float(data.mean())
        if n == 1 or np.all(data == data[0]):
            return Interval(value, value, value, n)
        res = stats.bootstrap(
            (data,), np.mean, confidence_level=CONFIDENCE, n_resamples=RESAMPLES, method="percentile",
            rng=np.random.default_rng(seed),
        )  # fmt: skip
    else:
        items = list(values)
        value = float(aggregate(items))
        if n == 1:
            return Interval(value, value, value, n)
        res = stats.bootstrap(
            (np.arange(n),), lambda idx: aggregate([items[int(i)] for i in idx]), confidence_level=CONFIDENCE,
            n_resamples=RESAMPLES // 4, method="percentile", vectorized=False, rng=np.random.default_rng(seed),
        )  # fmt: skip
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return Interval(value, min(low, value), max(high, value), n)


def compare(a: str, b: str, values_a: Sequence[float], values_b: Sequence[float], seed: int) -> Comparison:
    """Paired comparison of two arms' per-row values (same rows, same order)."""
    x, y = np.asarray(values_a, dtype=float), np.asarray(values_b, dtype=float)
    n = len(x)
    diff = x - y
    mean = float(diff.mean()) if n else float("nan")
    if n == 0:
        return Comparison(a, b, 0, mean, mean, mean, 1.0, "none")
    binary = np.isin(x, (0.0, 1.0)).all() and np.isin(y, (0.0, 1.0)).all()
    if np.all(diff == diff[0]):
        low = high = mean
        p = 1.0 if mean == 0 or n == 1 else _sign_p(diff)
        return Comparison(a, b, n, mean, low, high, p, "mcnemar-exact" if binary else "paired-bootstrap")
    res = stats.bootstrap(
        (diff,), np.mean, confidence_level=CONFIDENCE, n_resamples=RESAMPLES, method="percentile",
        rng=np.random.default_rng(seed),
    )  # fmt: skip
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if binary:
        wins, losses = int(((x == 1) & (y == 0)).sum()), int(((x == 0) & (y == 1)).sum())
        p = float(stats.binomtest(wins, wins + losses, 0.5).pvalue) if wins + losses else 1.0
        return Comparison(a, b, n, mean, low, high, p, "mcnemar-exact")
    # two-sided bootstrap p-value: how often the resampled mean difference crosses zero
    boot = res.bootstrap_distribution
    p = float(min(1.0, 2 * min((boot <= 0).mean(), (boot >= 0).mean())))
    return Comparison(a, b, n, mean, low, high, p, "paired-bootstrap")


def _sign_p(diff: np.ndarray) -> float:
    """Every row moved the same way: the exact sign-test probability of that under no difference."""
    nonzero = int((diff != 0).sum())
    return float(stats.binomtest(nonzero, nonzero, 0.5).pvalue) if nonzero else 1.0
