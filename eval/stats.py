"""Intervals, paired tests, multiplicity and power: the numbers a verdict stands on.

Why each method (Miller 2024, "Adding Error Bars to Evals", argues for most of them):

- A 0/1 rate gets a Wilson score interval, never a bootstrap: 0/10 must not read as [0, 0]
  (Wilson gives [0, 0.28]).
- Rows that share a cluster (knowledge questions about one source document, or one row
  answered by k training seeds) are not independent. Pass `clusters=` and rates use Wilson on
  the effective sample size (n over the design effect), means a cluster bootstrap, and paired
  differences a cluster-robust t test.
- A paired difference's interval agrees with its test. 0/1 metrics use exact McNemar (a
  binomial test on the discordant rows); its interval is the Clopper-Pearson interval of the
  discordant split, scaled by the Clopper-Pearson interval of the discordance rate. It
  excludes 0 exactly when McNemar's p < 0.05, and it stays wide when few rows differ.
  Continuous metrics use a paired percentile bootstrap, whose p-value is read from the same
  resamples.
- A report makes many comparisons after choosing the best arm: `holm` adjusts them.
- "Not significantly worse" is not evidence of a tie. `non_inferiority` tests an arm against
  the best within a declared margin; `minimum_detectable_difference` and `rows_needed` say
  what the run could have seen at 80% power, and how many rows would settle it.

Example:
    >>> ci = interval([1, 0, 1, 1], seed=0)
    >>> ci.value, ci.n, ci.method
    (0.75, 4, 'wilson')
    >>> round(interval([0] * 10, seed=0).ci_high, 2)
    0.28
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats
from statsmodels.stats.power import TTestPower
from statsmodels.stats.proportion import proportion_confint

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE
POWER = 0.8
RESAMPLES = 2000


@dataclass(frozen=True)
class Interval:
    value: float
    ci_low: float
    ci_high: float
    n: int
    method: str = "bootstrap"  # "wilson", "wilson-clustered", "bootstrap", "cluster-bootstrap"


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
    test: str  # "mcnemar-exact", "paired-bootstrap", "paired-cluster-t" or "none"

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA


@dataclass(frozen=True)
class NonInferiority:
    """Is `arm` at most `margin` worse than `best`? `difference` is arm minus best in the metric's own units."""

    arm: str
    best: str
    n: int
    difference: float
    ci_low: float
    ci_high: float
    margin: float
    p_value: float  # one-sided, against "arm is worse by the margin or more"
    test: str

    @property
    def non_inferior(self) -> bool:
        """The two-sided 95% interval stays inside the margin (a one-sided test at 2.5%, as CONSORT asks)."""
        return self.p_value < ALPHA / 2


def is_binary(values: Sequence) -> bool:
    data = np.asarray(values, dtype=float)
    return bool(data.size) and bool(np.isin(data, (0.0, 1.0)).all())


def wilson(successes: float, n: float, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval for a rate; `n` may be an effective (design-effect adjusted) sample size."""
    low, high = proportion_confint(successes, n, alpha=1 - confidence, method="wilson")
    return float(low), float(high)


def _groups(clusters: Sequence[Hashable] | None, n: int) -> np.ndarray | None:
    """Cluster index per row, or None when every row is its own cluster (nothing to correct)."""
    if clusters is None:
        return None
    if len(clusters) != n:
        raise ValueError(f"{len(clusters)} cluster keys for {n} values")
    _, index = np.unique(np.asarray([str(c) for c in clusters]), return_inverse=True)
    return index if index.max() + 1 < n else None


def clustered_se(values: Sequence[float], clusters: Sequence[Hashable]) -> float:
    """Cluster-robust (CR1) standard error of the mean: residuals are summed within a cluster before squaring."""
    y = np.asarray(values, dtype=float)
    _, g = np.unique(np.asarray([str(c) for c in clusters]), return_inverse=True)
    n_groups = int(g.max()) + 1
    if n_groups < 2:
        return float("nan")
    sums = np.bincount(g, weights=y - y.mean(), minlength=n_groups)
    return float(math.sqrt(n_groups / (n_groups - 1) * (sums**2).sum()) / len(y))


def design_effect(values: Sequence[float], clusters: Sequence[Hashable] | None) -> float:
    """Clustered variance of the mean over the independent-rows variance, at least 1."""
    y = np.asarray(values, dtype=float)
    if clusters is None or len(y) < 2 or y.var() == 0:
        return 1.0
    iid = y.var(ddof=1) / len(y)
    return max(1.0, clustered_se(y, clusters) ** 2 / iid)


def interval(
    values: Sequence,
    seed: int,
    aggregate: Callable[[Sequence], float] | None = None,
    *,
    clusters: Sequence[Hashable] | None = None,
) -> Interval:
    """The figure and its 95% interval: Wilson for 0/1 rates, else a (cluster) percentile bootstrap;
    `aggregate` replaces the mean (e.g. macro-F1 over pairs) and is bootstrapped over rows or clusters."""
    n = len(values)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0, "none")
    groups = _groups(clusters, n)
    rng = np.random.default_rng(seed)
    if aggregate is not None:
        items = list(values)
        value = float(aggregate(items))
        if n == 1:
            return Interval(value, value, value, n, "bootstrap")
        members = _members(groups, n)
        boot = [
            aggregate([items[i] for c in rng.integers(0, len(members), len(members)) for i in members[c]])
            for _ in range(RESAMPLES // 4)
        ]
        return _percentile(value, boot, n, "bootstrap" if groups is None else "cluster-bootstrap")
    data = np.asarray(values, dtype=float)
    value = float(data.mean())
    if is_binary(data):
        n_eff = n / design_effect(data, clusters if groups is not None else None)
        low, high = wilson(value * n_eff, n_eff)
        return Interval(value, min(low, value), max(high, value), n, "wilson" if groups is None else "wilson-clustered")
    if np.all(data == data[0]):
        return Interval(value, value, value, n, "bootstrap")
    if groups is None:
        res = stats.bootstrap(
            (data,), np.mean, confidence_level=CONFIDENCE, n_resamples=RESAMPLES, method="percentile", rng=rng
        )
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        return Interval(value, min(low, value), max(high, value), n, "bootstrap")
    return _percentile(value, _cluster_means(data, groups, rng), n, "cluster-bootstrap")


def replicated_interval(by_seed: Sequence[Sequence[float]], seed: int) -> Interval:
    """The mean over rows and training seeds, with a 95% interval that resamples both: seeds (with replacement),
    then rows (with replacement) within the chosen seeds. `by_seed[j][i]` is row i's value under training seed j
    (same rows, same order). With one seed it is the row bootstrap (Wilson for 0/1 values)."""
    data = np.asarray(by_seed, dtype=float)
    if data.ndim != 2 or data.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0, "none")
    k, n = data.shape
    if k == 1:
        return interval(list(data[0]), seed)
    value = float(data.mean())
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, k, size=(RESAMPLES, k))
    rows = rng.integers(0, n, size=(RESAMPLES, n))
    boot = np.array([data[seeds[b]][:, rows[b]].mean() for b in range(RESAMPLES)])
    low, high = np.percentile(boot, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    return Interval(value, min(float(low), value), max(float(high), value), n, f"seed-and-row-bootstrap (k={k})")


def _members(groups: np.ndarray | None, n: int) -> list[list[int]]:
    if groups is None:
        return [[i] for i in range(n)]
    return [list(np.flatnonzero(groups == g)) for g in range(int(groups.max()) + 1)]


def _cluster_means(data: np.ndarray, groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Means of RESAMPLES cluster bootstrap samples (whole clusters drawn with replacement)."""
    n_groups = int(groups.max()) + 1
    sums = np.bincount(groups, weights=data, minlength=n_groups)
    counts = np.bincount(groups, minlength=n_groups)
    draw = rng.integers(0, n_groups, (RESAMPLES, n_groups))
    return sums[draw].sum(axis=1) / counts[draw].sum(axis=1)


def _percentile(value: float, boot, n: int, method: str) -> Interval:
    low, high = np.percentile(np.asarray(boot, dtype=float), [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    return Interval(value, min(float(low), value), max(float(high), value), n, method)


def _clopper_pearson(k: int, n: int, confidence: float) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    tail = (1 - confidence) / 2
    low = 0.0 if k == 0 else float(stats.beta.ppf(tail, k, n - k + 1))
    high = 1.0 if k == n else float(stats.beta.ppf(1 - tail, k + 1, n - k))
    return low, high


def mcnemar_interval(wins: int, losses: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Interval for a paired difference of rates with `wins` rows 1-0 and `losses` rows 0-1 out of `n`.

    d = psi * (2 * theta - 1), psi the discordance rate and theta the share of discordant rows won:
    theta's exact interval decides the sign of each bound (so it excludes 0 exactly when the exact
    McNemar test rejects), psi's widens it (so 0 discordant rows in 10 gives +-0.31, not [0, 0]).
    """
    theta_low, theta_high = _clopper_pearson(wins, wins + losses, confidence)
    psi_low, psi_high = _clopper_pearson(wins + losses, n, confidence)
    low, high = 2 * theta_low - 1, 2 * theta_high - 1
    return min(psi_low * low, psi_high * low), max(psi_low * high, psi_high * high)


def _mcnemar_p(wins: int, losses: int) -> float:
    return float(stats.binomtest(wins, wins + losses, 0.5).pvalue) if wins + losses else 1.0


def _paired_cluster_t(diff: np.ndarray, clusters, shift: float = 0.0) -> tuple[float, float, float, int]:
    """Cluster-robust t on the paired differences: (se, t statistic against `shift`, critical t, df)."""
    se = clustered_se(diff, clusters)
    df = len(np.unique([str(c) for c in clusters])) - 1
    return se, (diff.mean() - shift) / se, float(stats.t.ppf(1 - ALPHA / 2, df)), df


def compare(
    a: str,
    b: str,
    values_a: Sequence[float],
    values_b: Sequence[float],
    seed: int,
    *,
    clusters: Sequence[Hashable] | None = None,
) -> Comparison:
    """Paired comparison of two arms' per-row values (same rows, same order); the interval agrees with the test."""
    x, y = np.asarray(values_a, dtype=float), np.asarray(values_b, dtype=float)
    n = len(x)
    if n == 0:
        return Comparison(a, b, 0, float("nan"), float("nan"), float("nan"), 1.0, "none")
    diff = x - y
    mean = float(diff.mean())
    if _groups(clusters, n) is not None and diff.var() > 0:
        se, t, crit, df = _paired_cluster_t(diff, clusters)
        p = float(2 * stats.t.sf(abs(t), df))
        return Comparison(a, b, n, mean, mean - crit * se, mean + crit * se, p, "paired-cluster-t")
    if is_binary(x) and is_binary(y):
        wins, losses = int((diff > 0).sum()), int((diff < 0).sum())
        low, high = mcnemar_interval(wins, losses, n)
        return Comparison(a, b, n, mean, low, high, _mcnemar_p(wins, losses), "mcnemar-exact")
    if np.all(diff == diff[0]):
        return Comparison(a, b, n, mean, mean, mean, 1.0 if mean == 0 or n == 1 else _sign_p(diff), "paired-bootstrap")
    boot = _paired_bootstrap(diff, seed)
    low, high = np.percentile(boot, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    # two-sided bootstrap p-value: how often the resampled mean difference crosses zero
    p = float(min(1.0, 2 * min((boot <= 0).mean(), (boot >= 0).mean())))
    return Comparison(a, b, n, mean, float(low), float(high), p, "paired-bootstrap")


def _paired_bootstrap(diff: np.ndarray, seed: int) -> np.ndarray:
    res = stats.bootstrap(
        (diff,), np.mean, confidence_level=CONFIDENCE, n_resamples=RESAMPLES, method="percentile",
        rng=np.random.default_rng(seed),
    )  # fmt: skip
    return res.bootstrap_distribution


def _sign_p(diff: np.ndarray) -> float:
    """Every row moved the same way: the exact sign-test probability of that under no difference."""
    nonzero = int((diff != 0).sum())
    return float(stats.binomtest(nonzero, nonzero, 0.5).pvalue) if nonzero else 1.0


def non_inferiority(
    arm: str,
    best: str,
    values_arm: Sequence[float],
    values_best: Sequence[float],
    margin: float,
    seed: int,
    *,
    higher_is_better: bool = True,
    clusters: Sequence[Hashable] | None = None,
) -> NonInferiority:
    """One-sided test that `arm` is worse than `best` by less than `margin` (same rows, same order).

    Uses the method `compare` would use, so the interval printed beside a comparison is the one
    the decision reads: non-inferior when its worse end stays inside the margin.
    """
    sign = 1.0 if higher_is_better else -1.0
    x, y = np.asarray(values_arm, dtype=float), np.asarray(values_best, dtype=float)
    n = len(x)
    if n == 0:
        return NonInferiority(arm, best, 0, float("nan"), float("nan"), float("nan"), margin, 1.0, "none")
    c = compare(arm, best, x, y, seed, clusters=clusters)
    gain = sign * (x - y)  # positive: arm better
    if c.test == "paired-cluster-t":
        se, t, _, df = _paired_cluster_t(gain, clusters, shift=-margin)
        p = float(stats.t.sf(t, df))
    elif c.test == "mcnemar-exact":
        wins, losses = int((gain > 0).sum()), int((gain < 0).sum())
        p = _mcnemar_margin_p(wins, losses, n, margin)
    elif c.test == "paired-bootstrap" and c.ci_low != c.ci_high:
        p = float((_paired_bootstrap(gain, seed) <= -margin).mean())
    else:  # every row differs by the same amount
        p = 0.0 if gain[0] > -margin else 1.0
    return NonInferiority(arm, best, n, c.difference, c.ci_low, c.ci_high, margin, p, c.test)


def _mcnemar_margin_p(wins: int, losses: int, n: int, margin: float) -> float:
    """The one-sided p-value dual to `mcnemar_interval`: half the level at which its lower bound reaches -margin."""

    def lower(confidence: float) -> float:
        return mcnemar_interval(wins, losses, n, confidence)[0]

    if lower(1e-9) <= -margin:
        return 0.5
    low_conf, high_conf = 1e-9, 1 - 1e-12
    if lower(high_conf) > -margin:
        return (1 - high_conf) / 2
    for _ in range(60):
        mid = (low_conf + high_conf) / 2
        low_conf, high_conf = (mid, high_conf) if lower(mid) > -margin else (low_conf, mid)
    return (1 - low_conf) / 2


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (family-wise error over every comparison a report makes), in the given order.
    The step-down rule itself, not statsmodels' `multipletests(method="holm")`, which gives the same values (tested)
    but runs a full `gc.collect()` on every call: 0.1-0.4 s each in a process holding torch and the models, a stall
    of the server whenever a run was scored, and over a minute of the test suite."""
    if len(p_values) == 0:
        return []
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate(p[order] * np.arange(len(p), 0, -1))
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(stepped, 1.0)
    return [float(v) for v in adjusted]


def paired_power(
    n: int, difference: float, *, discordance: float | None = None, sd: float | None = None, alpha: float = ALPHA
) -> float:
    """Power of the paired test on `n` rows to detect `difference`.

    0/1 metrics (no `sd`): exact McNemar power, with `discordance` the share of rows on which the
    arms disagree (None: as few as the difference allows, the most favourable case, so the
    result is an upper bound). Means (`sd`: standard deviation of the per-row difference): a
    paired t test, the large-sample twin of the bootstrap.
    """
    difference = abs(difference)
    if n <= 0 or difference == 0:
        return alpha
    if sd is not None:
        return float(TTestPower().power(effect_size=difference / sd, nobs=n, alpha=alpha)) if sd > 0 else 1.0
    if difference > 1:
        return 0.0
    psi = max(difference, discordance or 0.0)
    theta = (1 + difference / psi) / 2
    m = np.arange(n + 1)
    k = _mcnemar_critical(m, alpha)
    reject = np.where(k <= m, stats.binom.sf(k - 1, m, theta) + stats.binom.cdf(m - k, m, theta), 0.0)
    return float((stats.binom.pmf(m, n, psi) * reject).sum())


def _mcnemar_critical(m: np.ndarray, alpha: float) -> np.ndarray:
    """Per discordant count m, the fewest wins k > m/2 for which exact McNemar rejects (m + 1 if none)."""
    k = np.ceil(m / 2).astype(int)
    k = np.maximum(k, stats.binom.isf(alpha / 2, m, 0.5).astype(int) - 1)
    for _ in range(4):  # isf is a step away from the strict inequality the test uses
        too_small = (2 * stats.binom.sf(k - 1, m, 0.5) >= alpha) & (k <= m)
        k = np.where(too_small, k + 1, k)
    return np.where(2 * stats.binom.sf(k - 1, m, 0.5) < alpha, k, m + 1)


def minimum_detectable_difference(
    n: int,
    *,
    discordance: float | None = None,
    sd: float | None = None,
    alpha: float = ALPHA,
    power: float = POWER,
) -> float:
    """The smallest paired difference `n` rows detect with `power` (see `paired_power`); 1.0+ means none can."""
    if n <= 1:
        return float("inf")
    if sd is not None:
        if sd == 0:
            return 0.0
        return float(TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha, power=power)) * sd
    if paired_power(n, 1.0, alpha=alpha) < power:
        return float("inf")
    low, high = 0.0, 1.0
    for _ in range(40):
        mid = (low + high) / 2
        low, high = (mid, high) if paired_power(n, mid, discordance=discordance, alpha=alpha) < power else (low, mid)
    return high


def rows_needed(
    difference: float,
    *,
    discordance: float | None = None,
    sd: float | None = None,
    alpha: float = ALPHA,
    power: float = POWER,
    max_rows: int = 100_000,
) -> int | None:
    """Rows a paired comparison needs to detect `difference` with `power`; None if more than `max_rows`.

    Exact power saw-tooths by a few rows as n grows; this is the first n found by bisection.
    """
    if difference == 0:
        return None
    if sd is not None:
        if sd == 0:
            return 2
        rows = TTestPower().solve_power(effect_size=abs(difference) / sd, nobs=None, alpha=alpha, power=power)
        rows = math.ceil(float(np.squeeze(rows)))
        return rows if rows <= max_rows else None

    def enough(rows: int) -> bool:
        return paired_power(rows, difference, discordance=discordance, alpha=alpha) >= power

    high = 8
    while not enough(high):
        if high >= max_rows:
            return None
        high = min(2 * high, max_rows)
    low = high // 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid, high)
    return high
