import numpy as np
import pytest
from ragft.eval.scoring.stats import (
    clustered_se,
    compare,
    design_effect,
    holm,
    interval,
    mcnemar_interval,
    minimum_detectable_difference,
    non_inferiority,
    one_sided_p,
    paired_power,
    replicated_compare,
    rows_for_margin,
    rows_needed,
    sign_flip,
    tango_p,
    tango_power,
    tango_z,
    wilson,
)
from scipy import stats as scipy_stats


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


def test_rates_get_wilson_intervals_never_a_zero_width_one():
    none_right = interval([0] * 10, seed=0)
    assert none_right.method == "wilson" and none_right.ci_low == 0.0
    assert none_right.ci_high == pytest.approx(0.2775, abs=1e-4) and none_right.ci_high > 0.25  # 3.84 / 13.84
    all_right = interval([1, 1, 1], 0)
    assert (all_right.value, all_right.ci_high, all_right.n) == (1.0, 1.0, 3)
    assert all_right.ci_low == pytest.approx(3 / (3 + 1.96**2), abs=1e-3)  # Wilson's lower bound at p = 1
    assert wilson(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)  # Newcombe (1998), table I
    assert interval([], 0).n == 0


def test_aggregate_statistic_is_bootstrapped_over_rows_or_clusters():
    pairs = [("a", "a")] * 8 + [("b", "a")] * 2
    accuracy = lambda ps: sum(g == p for g, p in ps) / len(ps)  # noqa: E731
    ci = interval(pairs, 0, aggregate=accuracy)
    assert ci.value == pytest.approx(0.8) and ci.ci_low < 0.8 < ci.ci_high
    clustered = interval(pairs, 0, aggregate=accuracy, clusters=["d1"] * 5 + ["d2"] * 5)
    assert clustered.method == "cluster-bootstrap" and clustered.ci_low <= 0.6  # only two clusters: d2 scores 0.6


def test_clustered_standard_error_matches_statsmodels():
    import statsmodels.api as sm

    rng = np.random.default_rng(3)
    clusters = np.repeat(np.arange(12), 5)
    y = rng.normal(size=12)[clusters] + rng.normal(size=60)
    fit = sm.OLS(y, np.ones(60)).fit(cov_type="cluster", cov_kwds={"groups": clusters})
    assert clustered_se(y, clusters) == pytest.approx(float(fit.bse[0]), rel=1e-9)


def test_rows_that_share_a_document_widen_the_interval():
    values = [1] * 5 + [0] * 5 + [1] * 5 + [1] * 5  # four documents, five identical answers each
    docs = [d for d in "abcd" for _ in range(5)]
    alone, clustered = interval(values, 0), interval(values, 0, clusters=docs)
    assert clustered.method == "wilson-clustered" and design_effect(values, docs) == pytest.approx(5 * 19 / 20 * 4 / 3)
    assert clustered.ci_low < alone.ci_low and clustered.ci_high > alone.ci_high
    assert interval(values, 0, clusters=list(range(20))) == alone  # one row per cluster: nothing to correct
    scores = list(np.random.default_rng(0).uniform(0, 1, 20))
    assert interval(scores, 0, clusters=docs).method == "cluster-bootstrap"


def test_mcnemar_exact_on_binary_pairs():
    a = [1] * 10 + [1] * 5 + [0] * 5
    b = [0] * 10 + [1] * 5 + [0] * 5  # 10 discordant pairs, all won by a
    c = compare("a", "b", a, b, seed=0)
    assert c.test == "mcnemar-exact" and c.p_value == pytest.approx(2 * 0.5**10) and c.significant
    assert c.difference == pytest.approx(0.5) and 0 < c.ci_low < 0.5 < c.ci_high
    tie = compare("a", "b", [1, 0, 1, 0], [0, 1, 0, 1], seed=0)
    assert tie.p_value == 1.0 and not tie.significant and tie.ci_low < 0 < tie.ci_high


def test_five_nil_split_is_not_significant_and_its_interval_says_so():
    c = compare("a", "b", [1] * 5 + [0] * 5, [0] * 10, seed=0)
    assert c.p_value == pytest.approx(0.0625) and not c.significant and c.ci_low < 0 < c.ci_high
    six = compare("a", "b", [1] * 6 + [0] * 4, [0] * 10, seed=0)
    assert six.p_value == pytest.approx(0.03125) and six.significant and six.ci_low > 0
    same = compare("a", "b", [1] * 10, [1] * 10, seed=0)  # no row differs: still not "exactly equal"
    assert same.ci_low == pytest.approx(-(1 - 0.025 ** (1 / 10))) and same.ci_high == -same.ci_low


def test_binary_interval_agrees_with_the_exact_test_on_every_split():
    for n in (10, 25, 60):
        for wins in range(0, n + 1, 3):
            for losses in range(0, n - wins + 1, 2):
                a = [1] * wins + [0] * losses + [1] * (n - wins - losses)
                b = [0] * wins + [1] * losses + [1] * (n - wins - losses)
                c = compare("a", "b", a, b, seed=0)
                assert c.significant == (c.ci_low > 0 or c.ci_high < 0), (n, wins, losses)


def test_binary_interval_covers_the_true_difference():
    rng = np.random.default_rng(2)
    for n, p10, p01 in [(10, 0.1, 0.1), (30, 0.25, 0.1), (200, 0.3, 0.25)]:
        draws = rng.multinomial(n, [p10, p01, 1 - p10 - p01], size=1000)
        covered = [lo <= p10 - p01 <= hi for lo, hi in (mcnemar_interval(w, lo_, n) for w, lo_, _ in draws)]
        assert np.mean(covered) >= 0.95, (n, p10, p01)


def test_graded_scores_get_the_sign_flip_test():
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 1, 200)
    better = compare("x", "y", list(base + 0.05), list(base), 0)
    assert better.test == "sign-flip" and better.significant and better.ci_low == pytest.approx(0.05, abs=1e-5)
    noise = compare("x", "y", list(base + rng.normal(0, 0.1, 200)), list(base), 0)
    assert not noise.significant and noise.ci_low < 0 < noise.ci_high


def test_clustered_comparison_counts_documents_not_rows():
    # a wins every row of three documents and loses every row of one; ten rows per document
    a = [1] * 30 + [0] * 10 + [1] * 20
    b = [0] * 30 + [1] * 10 + [1] * 20
    docs = [d for d in "abcdef" for _ in range(10)]
    assert compare("a", "b", a, b, 0).significant  # 30-10 discordant rows, as if independent
    c = compare("a", "b", a, b, 0, clusters=docs)
    assert c.test == "cluster-sign-flip" and not c.significant and c.ci_low < 0 < c.ci_high
    # four documents differ (+10, +10, +10, -10): of 16 sign vectors, those summing to |20| or more: 10
    assert c.p_value == pytest.approx(10 / 16)


def test_holm_adjusts_in_the_given_order():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])  # 3 * 0.01, max(2 * 0.03, 0.03), carried
    assert holm([]) == []


def test_holm_gives_statsmodels_values_without_its_garbage_collection(monkeypatch):
    """The same adjusted p-values as statsmodels' Holm (ties, ones, a single test) with no gc.collect per call."""
    import gc

    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(0)
    cases = [[0.5], [1.0, 1.0], [0.01, 0.01, 0.2, 0.2, 0.04], *(list(rng.uniform(0, 0.2, n)) for n in (2, 7, 36))]
    expected = [list(multipletests(case, method="holm")[1]) for case in cases]
    calls = []
    monkeypatch.setattr(gc, "collect", lambda *a: calls.append(a) or 0)
    for case, want in zip(cases, expected, strict=True):
        assert holm(case) == pytest.approx(want, abs=1e-15)
    assert calls == []


def test_minimum_detectable_difference_for_paired_rates():
    # 10 rows: exact McNemar needs 6 of 6 one-way discordant rows, so nothing under 0.6 is detectable
    mdd_10 = minimum_detectable_difference(10)
    assert 0.6 < mdd_10 < 0.7 and paired_power(10, mdd_10) == pytest.approx(0.8, abs=1e-3)
    assert minimum_detectable_difference(100) < minimum_detectable_difference(100, discordance=0.3) < mdd_10
    assert minimum_detectable_difference(5) == float("inf")  # 5 rows can never reach p < 0.05


def test_exact_power_matches_simulation():
    n, psi, diff = 40, 0.3, 0.2
    theta = (1 + diff / psi) / 2
    rng = np.random.default_rng(0)
    discordant = rng.binomial(n, psi, 2000)
    wins = rng.binomial(discordant, theta)
    p = [scipy_stats.binomtest(w, m, 0.5).pvalue if m else 1.0 for w, m in zip(wins, discordant, strict=True)]
    assert paired_power(n, diff, discordance=psi) == pytest.approx(np.mean(np.array(p) < 0.05), abs=0.03)


def test_power_for_mean_metrics_and_rows_needed():
    # normal approximation: (1.96 + 0.84) * sd / sqrt(n)
    assert minimum_detectable_difference(400, sd=1.0) == pytest.approx(2.80 / 20, rel=0.02)
    assert rows_needed(0.1, sd=0.5) == pytest.approx((2.80 / 0.2) ** 2, rel=0.03)
    need = rows_needed(0.1, discordance=0.2)
    assert paired_power(need, 0.1, discordance=0.2) >= 0.8 > paired_power(need // 2, 0.1, discordance=0.2)
    assert rows_needed(0.001, discordance=1.0, max_rows=1000) is None


def test_non_inferiority_needs_evidence_not_just_a_tie():
    small = non_inferiority("base", "rag", [1] * 10, [1] * 10, margin=0.1, seed=0)
    # Tango with no discordant row: Z = sqrt(n margin / (1 - margin)) = sqrt(10 / 9)
    assert not small.non_inferior and small.p_value == pytest.approx(scipy_stats.norm.sf((10 / 9) ** 0.5))
    assert small.test == "tango-score"
    large = non_inferiority("base", "rag", [1] * 200, [1] * 200, margin=0.1, seed=0)
    assert large.non_inferior and large.ci_low > -0.1
    worse = non_inferiority("base", "rag", [0] * 40 + [1] * 160, [1] * 200, margin=0.1, seed=0)
    assert not worse.non_inferior and worse.difference == pytest.approx(-0.2)
    # lower is better: arm's hallucination rate 0.02 above best's, margin 0.1, on 300 rows
    rate = non_inferiority("base", "rag", [1] * 6 + [0] * 294, [0] * 300, margin=0.1, seed=0, higher_is_better=False)
    assert rate.non_inferior and rate.difference == pytest.approx(0.02)
    rng = np.random.default_rng(4)
    best = rng.uniform(0, 1, 300)
    close = non_inferiority("a", "b", list(best - 0.01 + rng.normal(0, 0.05, 300)), list(best), 0.05, seed=0)
    assert close.test == "paired-bootstrap" and close.non_inferior
    assert not non_inferiority("a", "b", list(best - 0.1), list(best), 0.05, seed=0).non_inferior


def test_an_interval_over_training_seeds_is_wider_when_seeds_disagree():
    from ragft.eval.scoring.stats import replicated_interval

    rows = 40
    agree = [[1.0 if i % 2 else 0.0 for i in range(rows)]] * 3
    disagree = [[1.0] * rows, [0.0] * rows, [1.0 if i % 2 else 0.0 for i in range(rows)]]
    a, d = replicated_interval(agree, seed=0), replicated_interval(disagree, seed=0)
    assert a.value == d.value == 0.5
    assert (d.ci_high - d.ci_low) > 2 * (a.ci_high - a.ci_low)  # seed-to-seed variance widens the interval
    assert replicated_interval([[1.0, 0.0, 1.0]], seed=0).method == "wilson"  # one seed: the row interval


# --- issue #33: exact clustered tests, Tango's non-inferiority test, training seeds in the test --------------------


def test_four_wins_and_no_loss_is_not_significant_whether_or_not_rows_share_documents():
    """Issue #33 item 2: the cluster-robust t test gave p = 0.044 for 4-0 over 80 rows; exact McNemar gives 0.125."""
    a, b = [1] * 4 + [0] * 76, [0] * 80
    alone = compare("a", "b", a, b, 0)
    assert alone.test == "mcnemar-exact" and alone.p_value == pytest.approx(0.125) and not alone.significant
    docs = [f"d{i // 4}" for i in range(80)]  # 20 documents of 4 rows; the 4 wins in 4 documents
    spread = compare("a", "b", a, b, 0, clusters=[f"d{i}" for i in range(4)] + docs[4:])
    assert spread.test == "cluster-sign-flip" and spread.p_value == pytest.approx(0.125) and not spread.significant
    together = compare("a", "b", a, b, 0, clusters=docs)  # all 4 wins in one document: one cluster moved
    assert together.p_value == pytest.approx(1.0) and together.ci_low <= 0 <= together.ci_high
    five = compare("a", "b", [1] * 5 + [0] * 75, [0] * 80, 0, clusters=[f"d{i}" for i in range(5)] + docs[5:])
    assert five.p_value == pytest.approx(0.0625) and not five.significant  # exact McNemar's 5-0


def test_the_sign_flip_test_is_exact_mcnemar_without_clusters_and_keeps_its_level_with_them():
    for wins, losses in [(4, 0), (6, 1), (10, 3), (0, 7)]:
        d = [1] * wins + [-1] * losses + [0] * 20
        assert sign_flip(d) == pytest.approx(scipy_stats.binomtest(wins, wins + losses, 0.5).pvalue)
    rng = np.random.default_rng(5)  # 30 documents of 4 rows, strongly clustered, no true difference
    docs = np.repeat(np.arange(30), 4)
    rejected = 0
    for r in range(300):
        skill = rng.random(30)[docs]
        a, b = (rng.random(120) < skill).astype(float), (rng.random(120) < skill).astype(float)
        rejected += compare("a", "b", list(a), list(b), r, clusters=list(docs)).significant
    assert rejected / 300 <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / 300)


def test_the_clustered_interval_agrees_with_the_clustered_test():
    rng = np.random.default_rng(6)
    docs = [f"d{i // 3}" for i in range(60)]
    for r in range(12):
        a = (rng.random(60) < 0.5).astype(float)
        b = (rng.random(60) < 0.5 - 0.04 * r).astype(float)
        c = compare("a", "b", list(a), list(b), r, clusters=docs)
        assert c.significant == (c.ci_low > 0 or c.ci_high < 0), r
        assert c.ci_low <= c.difference <= c.ci_high


def test_tango_uses_the_restricted_maximum_likelihood_estimate():
    """Tango's closed form against a numerical maximisation of the multinomial likelihood under the margin."""
    from scipy.optimize import minimize_scalar

    for wins, losses, n, delta in [(12, 7, 105, -0.1), (3, 9, 40, -0.2), (0, 0, 30, -0.1), (20, 5, 80, 0.05)]:

        def nll(q01, wins=wins, losses=losses, n=n, delta=delta):
            q10 = q01 + delta
            rest = 1 - q01 - q10
            return -(wins * np.log(q10) + losses * np.log(q01) + (n - wins - losses) * np.log(rest))

        q01 = minimize_scalar(nll, bounds=(max(0, -delta) + 1e-9, (1 - delta) / 2 - 1e-9), method="bounded").x
        expected = (wins - losses - n * delta) / np.sqrt(n * (2 * q01 + delta * (1 - delta)))
        assert tango_z(wins, losses, n, delta) == pytest.approx(expected, rel=1e-4)


def test_tango_keeps_its_level_at_the_margin_where_multiplied_intervals_were_far_too_strict():
    """Issue #33 item 3: the product of Clopper-Pearson intervals rejected 0.1-0.6% of the time at the margin
    against a nominal 2.5%, and had power 0.30 at n = 105, discordance 0.2; Tango: near 2.5%, and 0.60."""
    n, margin = 105, 0.1
    assert tango_power(n, margin, discordance=0.2, difference=-margin) == pytest.approx(0.025, abs=0.012)
    assert tango_power(n, margin, discordance=0.2) == pytest.approx(0.608, abs=0.01)
    assert tango_p(20, 1, 105, 0.1) < 0.025 < tango_p(10, 21, 105, 0.1)


def test_rows_for_margin_reach_the_promised_power_in_simulation():
    """The rows the report promises are met, with at least 80% power, by the test the report runs, both at
    2.5% and at a Bonferroni level over five comparisons with the best."""
    rng = np.random.default_rng(7)
    for discordance, alpha in [(0.2, 0.025), (0.3, 0.005)]:
        n = rows_for_margin(0.1, discordance=discordance, alpha=alpha)
        assert tango_power(n, 0.1, discordance=discordance, alpha=alpha) >= 0.8
        cells = rng.multinomial(n, [discordance / 2, discordance / 2, 1 - discordance], size=3000)
        shown = np.mean([tango_p(w, lo, n, 0.1) < alpha for w, lo, _ in cells])
        assert shown >= 0.8 - 2 * np.sqrt(0.8 * 0.2 / 3000), (discordance, alpha, n, shown)


def test_the_baseline_gate_is_one_sided():
    arm, chance = [1] * 5 + [0] * 35, [0] * 40  # 5-0: two-sided exact McNemar 0.0625, one-sided 0.03125
    assert one_sided_p(arm, chance, 0) == pytest.approx(1 / 32)
    assert one_sided_p(chance, arm, 0) == 1.0


def test_with_several_training_seeds_the_test_resamples_seeds():
    """Same row means, but seeds that disagree: the seed-resampling test sees the extra variance a test on
    per-row seed means hides."""
    rows = 60
    steady = [[1.0 if i % 10 < 6 else 0.0 for i in range(rows)]] * 3
    shaky = [[1.0 if i % 10 < 9 else 0.0 for i in range(rows)], [1.0 if i % 10 < 6 else 0.0 for i in range(rows)],
             [1.0 if i % 10 < 3 else 0.0 for i in range(rows)]]  # fmt: skip
    other = [[1.0 if i % 10 < 4 else 0.0 for i in range(rows)]]
    calm, _ = replicated_compare("lora", "fewshot", steady, other, 0)
    wild, _ = replicated_compare("lora", "fewshot", shaky, other, 0)
    assert calm.difference == pytest.approx(wild.difference) == pytest.approx(0.2)
    assert calm.significant and not wild.significant and wild.test == "seed-and-row-bootstrap (k=3)"
    assert (wild.ci_high - wild.ci_low) > 2 * (calm.ci_high - calm.ci_low)


def test_the_clustered_mdd_is_met_by_the_sign_flip_test_in_simulation():
    """40 documents of 4 rows whose win share varies by document: at the MDD the report prints, the sign-flip test
    reaches about the promised 80% (McNemar on the effective rows promised it at a difference it met 70% of the
    time: the test's reference variance grows with the effect)."""
    rng = np.random.default_rng(0)
    groups, size, psi = 40, 4, 0.3
    n = groups * size
    docs = [f"d{i}" for i in np.repeat(np.arange(groups), size)]

    def draw(delta: float) -> np.ndarray:
        theta = np.clip(0.5 + delta / (2 * psi) + rng.normal(0, 0.25, groups), 0, 1)
        won = rng.random(n) < np.repeat(theta, size)
        return np.where(rng.random(n) < psi, np.where(won, 1.0, -1.0), 0.0)

    deff = float(np.median([design_effect(draw(0.0), docs) for _ in range(60)]))
    mdd = minimum_detectable_difference(n, discordance=psi, design_effect=deff, cluster_size=size)
    hit = np.mean([sign_flip(draw(mdd), docs) < 0.05 for _ in range(300)])
    assert hit >= 0.8 - 2 * np.sqrt(0.8 * 0.2 / 300), (mdd, hit)


def test_few_graded_rows_moving_one_way_are_not_significant():
    """5 of 20 rows moved the same way (three-way abstention scores): a percentile bootstrap called it p = 0.006;
    the exact sign-flip test gives 2 / 2**5, as exact McNemar would for 5 wins and no loss."""
    a, b = [1.0] * 5 + [0.5] * 15, [-1.0] * 5 + [0.5] * 15
    c = compare("a", "b", a, b, 0)
    assert c.test == "sign-flip" and c.p_value == pytest.approx(0.0625) and c.ci_low <= 0 <= c.ci_high
    assert one_sided_p(a, b, 0) == pytest.approx(1 / 32)
