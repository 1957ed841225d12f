"""The canary judge's kernels, checked against scipy and against brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from shipyard.stats.canary import (
    alpha_at_look,
    alpha_spent,
    chi_square_test,
    combine,
    hodges_lehmann,
    ks_test,
    latency_shift_test,
    mann_whitney_greater,
    mean_difference_sf,
    rate_test,
    spread_test,
    verdict,
)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261124)


class TestRateTest:
    @pytest.mark.parametrize(
        ("xc", "nc", "xs", "ns"),
        [(9, 300, 27, 2700), (0, 50, 3, 900), (5, 100, 0, 900), (40, 400, 10, 4000)],
    )
    def test_p_value_matches_scipy_binomtest(self, xc: int, nc: int, xs: int, ns: int) -> None:
        result = rate_test(xc, nc, xs, ns)
        expected = sps.binomtest(xc, xc + xs, nc / (nc + ns), alternative="greater").pvalue
        assert result.p_value == pytest.approx(expected, abs=1e-9)

    def test_sparse_errors_against_error_free_stable_are_caught(self) -> None:
        """Kayenta #426: a burst of canary errors with a zero-error baseline must not pass."""
        result = rate_test(8, 500, 0, 4500)
        assert result.p_value < 1e-6
        assert result.effect == pytest.approx(8 / 500)

    def test_interval_contains_the_true_difference_in_most_simulations(
        self, rng: np.random.Generator
    ) -> None:
        covered = 0
        for _ in range(300):
            xc = int(rng.binomial(2000, 0.03))
            xs = int(rng.binomial(8000, 0.02))
            r = rate_test(xc, 2000, xs, 8000, conf_level=0.95)
            covered += r.ci_low <= 0.01 <= r.ci_high
        assert covered / 300 > 0.9

    def test_no_errors_anywhere_is_no_evidence(self) -> None:
        assert rate_test(0, 100, 0, 900).p_value == 1.0

    def test_impossible_counts_are_refused(self) -> None:
        with pytest.raises(ValueError, match="more errors than requests"):
            rate_test(5, 4, 0, 10)
        with pytest.raises(ValueError, match="at least one request"):
            rate_test(0, 0, 0, 10)


class TestLatency:
    def test_u_and_p_match_scipy_mannwhitneyu_with_ties(self, rng: np.random.Generator) -> None:
        x = rng.normal(10, 2, 300).round(1)
        y = rng.normal(9.7, 2, 2000).round(1)
        u, p = mann_whitney_greater(x, y)
        ref = sps.mannwhitneyu(x, y, alternative="greater", method="asymptotic")
        assert u == pytest.approx(float(ref.statistic), abs=1e-9)
        assert p == pytest.approx(float(ref.pvalue), abs=1e-9)

    def test_hodges_lehmann_is_the_median_of_pairwise_differences(
        self, rng: np.random.Generator
    ) -> None:
        x = rng.exponential(5, 40) + 1.0
        y = rng.exponential(5, 60)
        est, lo, hi = hodges_lehmann(x, y, conf_level=0.95)
        diffs = np.sort(np.subtract.outer(x, y).ravel())
        assert est == pytest.approx(float(np.median(diffs)), abs=1e-12)
        k = math.floor(2400 / 2 - sps.norm.isf(0.025) * math.sqrt(2400 * 101 / 12))
        assert (lo, hi) == (diffs[k - 1], diffs[2400 - k])

    def test_r_wilcox_documentation_example(self) -> None:
        """R's ?wilcox.test example: W = 35, exact one-sided p 0.1272; the normal approximation
        used here for large canary samples lands within 0.01 of it."""
        x = [0.80, 0.83, 1.89, 1.04, 1.45, 1.38, 1.91, 1.64, 0.73, 1.46]
        y = [1.15, 0.88, 0.90, 0.74, 1.21]
        u, p = mann_whitney_greater(x, y)
        assert u == 35
        assert p == pytest.approx(0.1272, abs=0.01)

    def test_shift_interval_covers_a_known_shift(self, rng: np.random.Generator) -> None:
        x = rng.normal(105, 10, 800)
        y = rng.normal(100, 10, 4000)
        r = latency_shift_test(x, y)
        assert r.ci_low < 5 < r.ci_high
        assert r.p_value < 1e-6

    def test_spread_statistic_is_scipy_levene_median(self, rng: np.random.Generator) -> None:
        x = rng.normal(10, 3, 300)
        y = rng.normal(10, 2, 1500)
        r = spread_test(x, y)
        ref = sps.levene(x, y, center="median")
        assert r.statistic == pytest.approx(float(ref.statistic), abs=1e-9)
        # the t reference halves scipy's two-sided p; the saddlepoint p is near it on
        # near-normal absolute deviations with hundreds of values per arm
        t_p = float(sps.t.sf(r.extra["t"], x.size + y.size - 2))
        assert 2 * t_p == pytest.approx(float(ref.pvalue), abs=1e-9)
        assert r.p_value < 1e-6 and r.effect > 1.3

    def test_wider_spread_with_the_same_median_is_caught_where_mann_whitney_is_blind(
        self, rng: np.random.Generator
    ) -> None:
        """Spinnaker #6278: a variance rise with the same median passes a location test."""
        x = rng.normal(100, 30, 600)
        y = rng.normal(100, 10, 3000)
        assert mann_whitney_greater(x, y)[1] > 0.01
        assert spread_test(x, y).p_value < 1e-10


class TestSpreadCalibration:
    """Brown–Forsythe's difference of mean absolute deviations, referred to its bootstrap
    distribution by the saddlepoint approximation instead of Student's t."""

    @pytest.mark.parametrize(
        ("m", "n", "q"), [(50, 950, 0.01), (200, 3800, 0.004), (100, 1900, 0.05)]
    )
    def test_tail_matches_the_exact_binomial_convolution(self, m: int, n: int, q: float) -> None:
        """Values 0 / 1: the two means are Binomial(m, q)/m and Binomial(n, q)/n, whose
        difference has an exact tail (scipy.stats.binom); checked between lattice points,
        down to p ≈ 1e-15, including the Poisson-like case of rare stalls in a small arm: never
        more than 5 % below the exact tail, at most twice it far out (conservative)."""
        pc = sps.binom.pmf(np.arange(m + 1), m, q)
        cdf_s = sps.binom.cdf(np.arange(n + 1), n, q)
        for k in range(2, 16):
            d = (k - 0.5) / m - q
            exact = sum(
                pc[i] * cdf_s[min(n, math.floor((i / m - d) * n))]
                for i in range(m + 1)
                if i / m >= d
            )
            if exact < 1e-15:
                break
            got = mean_difference_sf([0.0, 1.0], [1 - q, q], m, n, d)
            assert 0.95 * exact <= got <= 2.0 * exact, (k, exact, got)

    def test_tail_is_normal_for_symmetric_values_and_large_arms(self) -> None:
        p = mean_difference_sf([0.0, 1.0], [1, 1], 4000, 4000, 0.03)
        assert p == pytest.approx(float(sps.norm.sf(0.03 / math.sqrt(0.25 * 2 / 4000))), rel=0.02)

    def test_extreme_and_constant_arms_give_a_p_value(self) -> None:
        """No deviation at all, a canary below every stable deviation, and above every one."""
        assert spread_test([1.0, 1.0, 1.0], [1.0, 1.0]).p_value == 1.0
        assert spread_test([5.0, 5.0], [0.0, 2.0]).p_value == 1.0
        assert spread_test([0.0, 9.0], [5.0, 5.0, 5.0]).p_value < 0.5
        assert mean_difference_sf([0.0, 1.0], [1, 1], 3, 3, 1.0) == pytest.approx(0.5**6)
        assert mean_difference_sf([0.0, 1.0], [1, 1], 3, 3, -1.0) == 1.0

    def test_holds_its_level_with_a_small_canary_arm_on_lognormal_latency(self) -> None:
        """A/A with a 5 % canary arm (50 vs 950) on lognormal latency (σ 1.5), 6 000 seeds:
        the t reference of the same statistic rejects more than twice as often as its level
        (3.4 % at 1 %, 1.4 % at 0.1 %); the saddlepoint reference at most at its level."""
        rng = np.random.default_rng(20261130)
        m, n = 50, 950
        old, new = [], []
        for _ in range(6000):
            r = spread_test(rng.lognormal(0, 1.5, m), rng.lognormal(0, 1.5, n))
            old.append(float(sps.t.sf(r.extra["t"], m + n - 2)))
            new.append(r.p_value)
        for alpha in (0.01, 0.005, 0.001):
            assert np.mean(np.asarray(old) < alpha) > 2 * alpha
            assert np.mean(np.asarray(new) < alpha) <= alpha

    def test_rare_stalls_in_a_small_arm_are_judged_by_how_likely_they_are(
        self, rng: np.random.Generator
    ) -> None:
        """3 stalls of 25 ms among 100 canary requests answered in ~0.3 ms, 4 among 1 900
        stable ones: t says p ≈ 2e-6 (a rollback at any look's level), though 3 or more of
        the pooled 7 stalls land in a 100-request arm about once in 700 A/A looks (Poisson
        with mean 100 · 4/1 900); the saddlepoint p is that chance, within a factor 2."""
        y = rng.lognormal(math.log(0.3), 0.2, 1900)
        y[:4] = 25.0
        x = rng.lognormal(math.log(0.3), 0.2, 100)
        x[:3] = 25.0
        r = spread_test(x, y)
        chance = float(sps.poisson.sf(2, 100 * 4 / 1900))
        assert sps.t.sf(r.extra["t"], 1998) < 1e-5
        assert chance / 2 <= r.p_value <= 2 * chance


class TestPredictions:
    def test_ks_matches_scipy_asymptotic(self, rng: np.random.Generator) -> None:
        x = rng.beta(2, 5, 400)
        y = rng.beta(2.3, 5, 3000)
        r = ks_test(x, y)
        ref = sps.ks_2samp(x, y, method="asymp")
        assert r.statistic == pytest.approx(float(ref.statistic), abs=1e-12)
        assert r.p_value == pytest.approx(float(ref.pvalue), abs=1e-9)

    def test_chi_square_matches_scipy_contingency(self) -> None:
        r = chi_square_test([10, 20, 30, 0], [30, 20, 12, 0])
        ref = sps.chi2_contingency([[10, 20, 30], [30, 20, 12]], correction=False)
        assert r.statistic == pytest.approx(float(ref.statistic), abs=1e-9)
        assert r.p_value == pytest.approx(float(ref.pvalue), abs=1e-9)

    def test_one_class_only_is_no_evidence(self) -> None:
        assert chi_square_test([5, 0], [50, 0]).p_value == 1.0


class TestRepeatedLooks:
    @pytest.mark.parametrize("kind", ["pocock", "obrien_fleming"])
    def test_increments_sum_to_the_budget(self, kind: str) -> None:
        total = sum(alpha_at_look(k, 7, 0.01, kind) for k in range(1, 8))  # type: ignore[arg-type]
        assert total == pytest.approx(0.01, abs=1e-15)
        assert alpha_at_look(8, 7, 0.01, kind) == 0.0  # type: ignore[arg-type]

    def test_obrien_fleming_spends_little_early(self) -> None:
        assert alpha_spent(0.2, 0.05, "obrien_fleming") < alpha_spent(0.2, 0.05, "pocock") / 10

    def test_looking_every_interval_keeps_false_alarms_under_the_budget(
        self, rng: np.random.Generator
    ) -> None:
        """A/A with 6 looks at cumulative data: rejections ≤ α (naive 6 looks at α would not)."""
        alpha, looks, trials = 0.05, 6, 2000
        spent = naive = 0
        for _ in range(trials):
            xc = np.cumsum(rng.binomial(100, 0.02, looks))
            xs = np.cumsum(rng.binomial(900, 0.02, looks))
            n = np.arange(1, looks + 1)
            ps = [
                rate_test(int(a), 100 * int(k), int(b), 900 * int(k)).p_value
                for a, b, k in zip(xc, xs, n, strict=True)
            ]
            spent += any(p < alpha_at_look(k, looks, alpha) for k, p in enumerate(ps, 1))
            naive += any(p < alpha for p in ps)
        assert spent / trials <= alpha
        assert naive / trials > spent / trials


class TestVerdict:
    def test_too_little_traffic_extends(self) -> None:
        v = verdict(
            "errors", rate_test(3, 20, 1, 500), alpha=0.01, effect_floor=0.0, min_samples=100
        )
        assert v.outcome == "extend"
        assert "too little traffic" in v.reason

    def test_significant_but_tiny_effect_passes(self) -> None:
        r = rate_test(1100, 100_000, 9_000, 900_000)
        v = verdict("errors", r, alpha=0.01, effect_floor=0.005, min_samples=100)
        assert r.p_value < 0.01
        assert v.outcome == "pass"

    def test_fail_carries_its_evidence(self) -> None:
        v = verdict(
            "errors", rate_test(30, 300, 27, 2700), alpha=0.01, effect_floor=0.005, min_samples=100
        )
        assert v.outcome == "fail"
        d = v.to_dict()
        assert d["n_canary"] == 300 and d["n_stable"] == 2700 and d["effect"] == pytest.approx(0.09)
        assert combine([v]) == "fail"
