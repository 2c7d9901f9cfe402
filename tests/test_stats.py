import numpy as np
import pytest

from eval.stats import compare, interval


def test_bootstrap_interval_on_a_known_distribution():
    data = np.random.default_rng(0).normal(10.0, 2.0, 900)
    ci = interval(list(data), seed=0)
    half = 1.96 * 2.0 / np.sqrt(900)  # the textbook interval: +-0.131
    assert ci.value == pytest.approx(data.mean()) and ci.ci_low < 10.0 < ci.ci_high
    assert (ci.ci_high - ci.ci_low) == pytest.approx(2 * half, rel=0.15)
    assert interval(list(data), seed=0) == ci  # same seed, same numbers


def test_bootstrap_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    samples = [rng.exponential(1.0, 120) for _ in range(200)]
    intervals = [interval(list(s), seed=i) for i, s in enumerate(samples)]
    covered = sum(ci.ci_low < 1.0 < ci.ci_high for ci in intervals)
    assert 176 <= covered <= 198  # 95% of 200 = 190; percentile intervals run a little narrow on skewed data


def test_degenerate_and_empty_samples():
    assert interval([1, 1, 1], 0) == interval([1.0, 1.0, 1.0], 0)
    ci = interval([1, 1, 1], 0)
    assert (ci.value, ci.ci_low, ci.ci_high, ci.n) == (1.0, 1.0, 1.0, 3)
    assert interval([], 0).n == 0


def test_aggregate_statistic_is_bootstrapped_over_rows():
    pairs = [("a", "a")] * 8 + [("b", "a")] * 2
    ci = interval(pairs, 0, aggregate=lambda ps: sum(g == p for g, p in ps) / len(ps))
    assert ci.value == pytest.approx(0.8) and ci.ci_low < 0.8 < ci.ci_high


def test_mcnemar_exact_on_binary_pairs():
    a = [1] * 10 + [1] * 5 + [0] * 5
    b = [0] * 10 + [1] * 5 + [0] * 5  # 10 discordant pairs, all won by a
    c = compare("a", "b", a, b, seed=0)
    assert c.test == "mcnemar-exact" and c.p_value == pytest.approx(2 * 0.5**10) and c.significant
    assert c.difference == pytest.approx(0.5)
    tie = compare("a", "b", [1, 0, 1, 0], [0, 1, 0, 1], seed=0)
    assert tie.p_value == 1.0 and not tie.significant


def test_paired_bootstrap_on_continuous_scores():
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 1, 200)
    better = compare("x", "y", list(base + 0.05), list(base), 0)
    assert better.test == "paired-bootstrap" and better.significant and better.ci_low == pytest.approx(0.05)
    noise = compare("x", "y", list(base + rng.normal(0, 0.1, 200)), list(base), 0)
    assert not noise.significant and noise.ci_low < 0 < noise.ci_high
