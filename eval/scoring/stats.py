"""Intervals, paired tests, multiplicity and power: the numbers a verdict stands on.

Why each method (Miller 2024, "Adding Error Bars to Evals", argues for most of them):

- A 0/1 rate gets a Wilson score interval, never a bootstrap: 0/10 must not read as [0, 0]
  (Wilson gives [0, 0.28]).
- Rows that share a cluster (knowledge questions about one source document, or one row
  answered by k training seeds) are not independent. Pass `clusters=` and rates use Wilson on
  the effective sample size (n over the design effect), means a cluster bootstrap, and paired
  differences the cluster sign-flip test (`sign_flip`): under "the arms are exchangeable" each
  document's summed difference is as likely negated, so flipping signs cluster by cluster gives
  the exact null distribution (Fisher's randomization test on matched clusters; the exact
  counterpart of the clustered McNemar of Obuchowski 1998 and Durkalski et al. 2003). With every
  row its own cluster it *is* exact McNemar: 4 wins and 0 losses give p = 0.125 whether or not the
  rows share documents (the cluster-robust t test it replaces gave 0.044). Its interval inverts
  the same test over shifts of the difference.
- A paired difference's interval agrees with its test. 0/1 metrics use exact McNemar (a
  binomial test on the discordant rows); its interval is the Clopper-Pearson interval of the
  discordant split, scaled by the Clopper-Pearson interval of the discordance rate. It
  excludes 0 exactly when McNemar's p < 0.05, and it stays wide when few rows differ.
  Continuous metrics use a paired percentile bootstrap, whose p-value is read from the same
  resamples.
- A report makes many comparisons after choosing the best arm: `holm` adjusts them.
- "Not significantly worse" is not evidence of a tie. `non_inferiority` tests an arm against
  another within a declared margin: for 0/1 scores Tango's (1998) score test for a difference of
  paired proportions (its variance from the restricted maximum-likelihood estimate under the
  margin), divided by the square root of the design effect where rows share documents
  (Obuchowski 1998's variance inflation for clustered pairs); a paired bootstrap for means.
  `tango_power` and `rows_for_margin` give the power and the rows of that same test (exact, by
  enumerating the discordant split); `minimum_detectable_difference` and `rows_needed` do the
  same for the paired difference test.
- With k training seeds (`replicated_compare`) the paired test resamples seeds of each arm and
  document clusters together, so seed-to-seed variance of an adapter reaches the p-value.

Example:
    >>> ci = interval([1, 0, 1, 1], seed=0)
    >>> ci.value, ci.n, ci.method
    (0.75, 4, 'wilson')
    >>> round(interval([0] * 10, seed=0).ci_high, 2)
    0.28
"""

from __future__ import annotations

import functools
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
    test: str  # "mcnemar-exact", "cluster-sign-flip", "sign-flip", "seed-and-...-bootstrap (k=...)" or "none"

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
        """Shown within the margin by the one-sided test at 2.5% (as CONSORT asks), before any adjustment."""
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


FLIP_DRAWS = 4000  # Monte Carlo sign vectors where the flip distribution is not enumerated (p's MC error <= 0.008)
ENUMERATE = 12  # clusters up to which every sign vector is enumerated (4,096)


def _cluster_sums(diff: np.ndarray, clusters) -> tuple[np.ndarray, np.ndarray]:
    """Per cluster: the summed paired difference and the number of rows (every row its own cluster if None)."""
    if clusters is None:
        return diff.astype(float), np.ones(len(diff))
    _, g = np.unique(np.asarray([str(c) for c in clusters]), return_inverse=True)
    return np.bincount(g, weights=diff), np.bincount(g).astype(float)


def _flip_exact(sums: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The exact null distribution of sum(sign_j * sums_j) (values, probabilities) when the sums are integers
    (0/1 scores: wins minus losses per cluster), by convolving one cluster at a time; None otherwise."""
    if not np.allclose(sums, np.round(sums)):
        return None
    c = np.abs(np.round(sums).astype(int))
    c = c[c > 0]
    total = int(c.sum())
    dist = np.zeros(2 * total + 1)
    dist[total] = 1.0
    for v in c:
        dist = 0.5 * (np.roll(dist, v) + np.roll(dist, -v))  # no wrap-around: |partial sum| <= total
    return np.arange(-total, total + 1, dtype=float), dist


@functools.lru_cache(maxsize=64)
def _sign_matrix(groups: int, seed: int) -> np.ndarray:
    """Sign vectors for the flip test: all 2^G when G <= ENUMERATE, else FLIP_DRAWS seeded draws plus the identity
    (cached and read-only: a report draws the same matrix for every pair of a family)."""
    if groups <= ENUMERATE:
        signs = 1.0 - 2.0 * ((np.arange(2**groups)[:, None] >> np.arange(groups)) & 1)
    else:
        draws = 1.0 - 2.0 * np.random.default_rng(seed).integers(0, 2, size=(FLIP_DRAWS, groups))
        signs = np.vstack([np.ones(groups), draws])
    signs.flags.writeable = False
    return signs


def sign_flip(diff: Sequence[float], clusters=None, *, seed: int = 0, alternative: str = "two-sided",
              shift: float = 0.0) -> float:  # fmt: skip
    """p-value of the cluster sign-flip test of "mean paired difference = `shift`": each cluster's summed
    difference (minus shift x its rows) keeps or flips its sign with probability 1/2. Exact for 0/1 scores (and
    for up to ENUMERATE clusters), else Monte Carlo. `alternative`: "two-sided", "greater" or "less".
    Without clusters and for 0/1 scores this is exact McNemar (the sign test on the discordant rows).

    Example:
        >>> sign_flip([1, 1, 1, 1] + [0] * 76)  # 4 wins, 0 losses: exact McNemar's 2 / 2**4
        0.125
        >>> sign_flip([1, 1, 1, 1] + [0] * 76, ["d1", "d1", "d2", "d3"] + [f"r{i}" for i in range(76)])
        0.25
    """
    d = np.asarray(diff, dtype=float)
    if d.size == 0:
        return 1.0
    sums, sizes = _cluster_sums(d, clusters)
    resid = sums - shift * sizes
    resid = resid[resid != 0]  # a cluster that sums to 0 adds nothing to any flip: fewer to enumerate
    if resid.size == 0:
        return 1.0
    observed = float(resid.sum())
    tol = 1e-9 * max(1.0, float(np.abs(resid).sum()))
    exact = _flip_exact(resid) if shift == 0 else None
    if exact is not None:
        values, probs = exact
    else:
        signs = _sign_matrix(len(resid), seed)
        values, probs = signs @ resid, np.full(len(signs), 1 / len(signs))
    if alternative == "greater":
        p = probs[values >= observed - tol].sum()
    elif alternative == "less":
        p = probs[values <= observed + tol].sum()
    else:
        p = probs[np.abs(values) >= abs(observed) - tol].sum()
    return float(min(1.0, p))


def sign_flip_interval(diff: Sequence[float], clusters, *, seed: int = 0, confidence: float = CONFIDENCE,
                       p_at_zero: float | None = None) -> tuple[float, float]:  # fmt: skip
    """The interval for the mean paired difference that inverts the cluster sign-flip test over shifts: every
    shift the test does not reject at 1 - confidence (one fixed set of sign vectors, so the bounds are stable;
    Ernst 2004, "Permutation methods", Statistical Science 19:676). `p_at_zero`, the exact p-value at 0, makes
    the interval agree with the test where Monte Carlo error near a bound would not."""
    d = np.asarray(diff, dtype=float)
    sums, sizes = _cluster_sums(d, clusters)
    signs = _sign_matrix(len(sums), seed)
    alpha = 1 - confidence
    mean = float(d.mean())

    def accepted(delta: float) -> bool:
        resid = sums - delta * sizes
        tol = 1e-9 * max(1.0, float(np.abs(resid).sum()))
        return bool(np.mean(np.abs(signs @ resid) >= abs(resid.sum()) - tol) >= alpha)

    binary = is_binary(np.abs(d))
    span = 1.0 if binary else float(d.max() - d.min()) or 1.0
    lo_end, hi_end = (-1.0, 1.0) if binary else (float(d.min()) - span, float(d.max()) + span)

    def bound(inside: float, outside: float) -> float:
        if accepted(outside):
            return outside
        for _ in range(20):  # to 2e-6 of the difference's range: past the 4 decimals results.json keeps
            mid = (inside + outside) / 2
            inside, outside = (mid, outside) if accepted(mid) else (inside, mid)
        return inside

    low, high = bound(mean, lo_end), bound(mean, hi_end)
    if p_at_zero is not None:  # the exact test decides at 0
        if p_at_zero >= alpha:
            low, high = min(low, 0.0), max(high, 0.0)
        elif low <= 0 <= high:
            low, high = (min(mean, 1e-6), high) if mean > 0 else (low, max(mean, -1e-6))
    return min(low, mean), max(high, mean)


def tango_z(wins: float, losses: float, n: float, delta: float) -> float:
    """Tango's (1998, Stat Med 17:891) score statistic for "p_a - p_b = delta" on n paired 0/1 rows with `wins`
    rows 1-0 and `losses` rows 0-1: (wins - losses - n delta) over its standard error at the restricted maximum-
    likelihood estimate of the 0-1 cell's probability under delta."""
    b, c = float(wins), float(losses)
    big_b = -b - c + (2 * n - b + c) * delta
    big_c = -c * delta * (1 - delta)
    q01 = (math.sqrt(max(big_b**2 - 8 * n * big_c, 0.0)) - big_b) / (4 * n)
    var = n * (2 * q01 + delta * (1 - delta))
    gap = b - c - n * delta
    if var <= 1e-15:
        return math.copysign(math.inf, gap) if gap else 0.0
    return gap / math.sqrt(var)


def tango_p(wins: float, losses: float, n: float, margin: float, design_effect: float = 1.0) -> float:
    """One-sided p-value against "a is worse than b by `margin` or more" (Tango's score test at delta = -margin;
    Z shrunk by the square root of the design effect where rows share clusters)."""
    if n <= 0:
        return 1.0
    return float(stats.norm.sf(tango_z(wins, losses, n, -margin) / math.sqrt(max(1.0, design_effect))))


def _split_grid(n: int, discordance: float, difference: float):
    """Every (wins, losses) split of n rows with its probability, when a wins a share (discordance + difference)/2
    of rows and loses (discordance - difference)/2; splits more than 7 standard deviations out left out."""
    psi = min(1.0, max(discordance, abs(difference)))
    sd = math.sqrt(n * psi * (1 - psi))
    m = np.arange(max(0, int(n * psi - 7 * sd - 2)), min(n, int(n * psi + 7 * sd + 2)) + 1)
    theta = 0.5 if psi == 0 else (1 + difference / psi) / 2
    spread = 7 * np.sqrt(m * theta * (1 - theta)) + 2
    low = np.maximum(0, np.floor(m * theta - spread)).astype(int)
    high = np.minimum(m, np.ceil(m * theta + spread)).astype(int)
    counts = high - low + 1
    mm = np.repeat(m, counts)
    ww = np.repeat(low, counts) + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
    prob = stats.binom.pmf(mm, n, psi) * stats.binom.pmf(ww, mm, theta)
    return ww, mm - ww, prob


def _tango_z_array(wins: np.ndarray, losses: np.ndarray, n: int, delta: float) -> np.ndarray:
    b, c = wins.astype(float), losses.astype(float)
    big_b = -b - c + (2 * n - b + c) * delta
    big_c = -c * delta * (1 - delta)
    q01 = (np.sqrt(np.maximum(big_b**2 - 8 * n * big_c, 0.0)) - big_b) / (4 * n)
    var = n * (2 * q01 + delta * (1 - delta))
    gap = b - c - n * delta
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(var > 1e-15, gap / np.sqrt(np.maximum(var, 1e-300)), np.sign(gap) * np.inf)


@functools.lru_cache(maxsize=4096)
def tango_power(n: int, margin: float, *, discordance: float, difference: float = 0.0,
                alpha: float = ALPHA / 2) -> float:  # fmt: skip
    """Exact power of Tango's non-inferiority test (one-sided at `alpha`) on n rows when the true difference is
    `difference` and the arms disagree on a share `discordance` of rows (every discordant split enumerated)."""
    if n <= 0:
        return 0.0
    wins, losses, prob = _split_grid(n, discordance, difference)
    z = _tango_z_array(wins, losses, n, -margin)
    return float(prob[z > stats.norm.isf(alpha)].sum())


@functools.lru_cache(maxsize=1024)
def rows_for_margin(margin: float, *, discordance: float, alpha: float = ALPHA / 2, power: float = POWER,
                    design_effect: float = 1.0, max_rows: int = 20_000) -> int | None:  # fmt: skip
    """Rows Tango's non-inferiority test needs to show two equally good arms within `margin` with `power` (one-
    sided at `alpha`: pass the level the report runs it at), times the design effect where rows share clusters;
    None if more than `max_rows`. The first n found by bisection at which the exact power reaches `power`."""

    high = fewest_rows(lambda rows: tango_power(rows, margin, discordance=discordance, alpha=alpha) >= power, max_rows)
    if high is None:
        return None
    rows = math.ceil(high * max(1.0, design_effect))
    return rows if rows <= max_rows else None


def fewest_rows(enough: Callable[[int], bool], max_rows: int) -> int | None:
    """The first row count found by doubling from 8, then bisecting, at which `enough` holds (exact power
    saw-tooths by a few rows as n grows, so this is a first such n, not the least); None past `max_rows`."""
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


def compare(
    a: str,
    b: str,
    values_a: Sequence[float],
    values_b: Sequence[float],
    seed: int,
    *,
    clusters: Sequence[Hashable] | None = None,
) -> Comparison:
    """Paired comparison of two arms' per-row values (same rows, same order); the interval agrees with the test.
    Rows that share clusters: the cluster sign-flip test and its inverted interval; else exact McNemar for 0/1
    scores, and for graded scores the sign-flip test with every row its own cluster (exact up to ENUMERATE rows that
    differ, Monte Carlo beyond)."""
    x, y = np.asarray(values_a, dtype=float), np.asarray(values_b, dtype=float)
    n = len(x)
    if n == 0:
        return Comparison(a, b, 0, float("nan"), float("nan"), float("nan"), 1.0, "none")
    diff = x - y
    mean = float(diff.mean())
    if _groups(clusters, n) is not None and diff.any():
        p = sign_flip(diff, clusters, seed=seed)
        low, high = sign_flip_interval(diff, clusters, seed=seed, p_at_zero=p)
        return Comparison(a, b, n, mean, low, high, p, "cluster-sign-flip")
    if is_binary(x) and is_binary(y):
        wins, losses = int((diff > 0).sum()), int((diff < 0).sum())
        low, high = mcnemar_interval(wins, losses, n)
        return Comparison(a, b, n, mean, low, high, _mcnemar_p(wins, losses), "mcnemar-exact")
    if not diff.any():
        return Comparison(a, b, n, 0.0, 0.0, 0.0, 1.0, "sign-flip")
    # graded scores: the same permutation test, every row its own cluster (a percentile bootstrap's p-value ran
    # lenient on few differing rows: 5 rows moved one way of 20 gave about 0.006 where the exact test gives 0.0625)
    p = sign_flip(diff, None, seed=seed)
    low, high = sign_flip_interval(diff, None, seed=seed, p_at_zero=p)
    return Comparison(a, b, n, mean, low, high, p, "sign-flip")


def one_sided_p(values_a: Sequence[float], values_b: Sequence[float], seed: int, *, higher_is_better: bool = True,
                clusters: Sequence[Hashable] | None = None) -> float:  # fmt: skip
    """p-value of the one-sided paired test "a is no better than b" (the baseline gate): the sign-flip test
    (exact McNemar, one-sided, for unclustered 0/1 rows)."""
    gain = (1.0 if higher_is_better else -1.0) * (np.asarray(values_a, float) - np.asarray(values_b, float))
    if gain.size == 0 or not gain.any():
        return 1.0
    groups = _groups(clusters, len(gain))
    return sign_flip(gain, clusters if groups is not None else None, seed=seed, alternative="greater")


def replicated_compare(a: str, b: str, by_seed_a: Sequence[Sequence[float]], by_seed_b: Sequence[Sequence[float]],
                       seed: int, *, clusters: Sequence[Hashable] | None = None) -> tuple[Comparison, np.ndarray]:  # fmt: skip
    """Paired comparison when an arm was trained k times: `by_seed_x[j][i]` is row i under seed j (one row for
    an arm that trains nothing). Each resample draws seeds of each arm with replacement and whole clusters (rows
    where none are shared) with replacement, so seed-to-seed variance of the adapters reaches the test (a two-
    stage bootstrap, Davison & Hinkley 1997, section 3.8); the interval is the resamples' percentiles and the
    two-sided p-value how often they cross 0. Returns the comparison and the resampled differences (a minus b),
    which the non-inferiority and one-sided tests read."""
    xa, xb = np.asarray(by_seed_a, dtype=float), np.asarray(by_seed_b, dtype=float)
    n = xa.shape[1]
    if n == 0:
        return Comparison(a, b, 0, float("nan"), float("nan"), float("nan"), 1.0, "none"), np.zeros(0)
    if clusters is None:
        g = np.arange(n)
    else:
        _, g = np.unique(np.asarray([str(c) for c in clusters]), return_inverse=True)
    groups = int(g.max()) + 1
    sums_a = np.stack([np.bincount(g, weights=r, minlength=groups) for r in xa])
    sums_b = np.stack([np.bincount(g, weights=r, minlength=groups) for r in xb])
    sizes = np.bincount(g, minlength=groups).astype(float)
    rng = np.random.default_rng(seed)
    boot = np.empty(RESAMPLES)
    for r in range(RESAMPLES):
        pick = rng.integers(0, groups, groups)
        ma = sums_a[rng.integers(0, len(xa), len(xa))].mean(axis=0)
        mb = sums_b[rng.integers(0, len(xb), len(xb))].mean(axis=0)
        boot[r] = (ma[pick] - mb[pick]).sum() / sizes[pick].sum()
    mean = float(xa.mean() - xb.mean())
    low, high = np.percentile(boot, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    p = float(min(1.0, 2 * min((boot <= 0).mean(), (boot >= 0).mean())))
    k = max(len(xa), len(xb))
    test = f"seed-and-cluster-bootstrap (k={k})" if clusters is not None else f"seed-and-row-bootstrap (k={k})"
    return Comparison(a, b, n, mean, min(float(low), mean), max(float(high), mean), p, test), boot


def _paired_bootstrap(diff: np.ndarray, seed: int) -> np.ndarray:
    res = stats.bootstrap(
        (diff,), np.mean, confidence_level=CONFIDENCE, n_resamples=RESAMPLES, method="percentile",
        rng=np.random.default_rng(seed),
    )  # fmt: skip
    return res.bootstrap_distribution


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

    0/1 scores: Tango's score test (`tango_p`), its Z divided by the square root of the design effect of the
    paired differences where rows share clusters. Means: the paired (cluster) bootstrap's share of resampled
    differences at or below -margin. The interval reported beside it is `compare`'s two-sided 95% interval.
    """
    x, y = np.asarray(values_arm, dtype=float), np.asarray(values_best, dtype=float)
    n = len(x)
    if n == 0:
        return NonInferiority(arm, best, 0, float("nan"), float("nan"), float("nan"), margin, 1.0, "none")
    c = compare(arm, best, x, y, seed, clusters=clusters)
    p, test = non_inferiority_p(x, y, margin, seed, higher_is_better=higher_is_better, clusters=clusters)
    return NonInferiority(arm, best, n, c.difference, c.ci_low, c.ci_high, margin, p, test)


def non_inferiority_p(values_arm: Sequence[float], values_other: Sequence[float], margin: float, seed: int, *,
                      higher_is_better: bool = True, clusters: Sequence[Hashable] | None = None) -> tuple[float, str]:  # fmt: skip
    """The one-sided p-value of `non_inferiority` (arm at most `margin` worse than other) and the test's name."""
    x, y = np.asarray(values_arm, dtype=float), np.asarray(values_other, dtype=float)
    n = len(x)
    if n == 0:
        return 1.0, "none"
    gain = (1.0 if higher_is_better else -1.0) * (x - y)  # positive: arm better
    groups = _groups(clusters, n)
    if is_binary(x) and is_binary(y):
        wins, losses = int((gain > 0).sum()), int((gain < 0).sum())
        deff = design_effect(gain, clusters) if groups is not None else 1.0
        return tango_p(
            wins, losses, n, margin, deff
        ), "tango-score" if groups is None else "tango-score (design effect)"
    if np.all(gain == gain[0]):  # every row differs by the same amount
        return (0.0 if gain[0] > -margin else 1.0), "paired-bootstrap"
    if groups is None:
        return float((_paired_bootstrap(gain, seed) <= -margin).mean()), "paired-bootstrap"
    return float((_cluster_means(gain, groups, np.random.default_rng(seed)) <= -margin).mean()), "cluster-bootstrap"


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


def clustered_power(n: int, difference: float, *, discordance: float, design_effect: float, cluster_size: float,
                    alpha: float = ALPHA) -> float:  # fmt: skip
    """Power of the cluster sign-flip test on n rows (normal approximation): the summed difference has variance
    n x discordance x design effect, and the test's own reference variance is that plus difference^2 x n x
    cluster_size (the sum of squared cluster sizes over n), because it is built from the observed cluster sums,
    effect included: the reason an effective-rows McNemar figure ran a few points optimistic (73% in a simulation
    that promised 80%)."""
    d = abs(difference)
    v0 = n * max(discordance, d) * max(1.0, design_effect)
    if v0 <= 0:
        return 1.0 if d > 0 else alpha
    z = stats.norm.isf(alpha / 2)
    return float(stats.norm.cdf((n * d - z * math.sqrt(v0 + d * d * n * cluster_size)) / math.sqrt(v0)))


@functools.lru_cache(maxsize=1024)
def minimum_detectable_difference(
    n: int,
    *,
    discordance: float | None = None,
    sd: float | None = None,
    alpha: float = ALPHA,
    power: float = POWER,
    design_effect: float = 1.0,
    cluster_size: float = 1.0,
) -> float:
    """The smallest paired difference `n` rows detect with `power` (see `paired_power`; `clustered_power` where
    rows share clusters: pass the design effect and the sum of squared cluster sizes over n); inf when none can."""
    if n <= 1:
        return float("inf")
    if sd is not None:
        if sd == 0:
            return 0.0
        return float(TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha, power=power)) * sd
    if design_effect > 1 or cluster_size > 1:  # rows that share clusters: the sign-flip test's own power

        def enough(d: float) -> bool:
            return clustered_power(n, d, discordance=discordance or d, design_effect=design_effect,
                                   cluster_size=cluster_size, alpha=alpha) >= power  # fmt: skip

        if not enough(1.0):
            return float("inf")
        low, high = 0.0, 1.0
        for _ in range(40):
            mid = (low + high) / 2
            low, high = (mid, high) if not enough(mid) else (low, mid)
        return high
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

    return fewest_rows(lambda rows: paired_power(rows, difference, discordance=discordance, alpha=alpha) >= power,
                       max_rows)  # fmt: skip
