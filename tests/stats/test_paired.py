"""The replay's paired kernels against scipy and against the signed-rank statistic computed by
hand (ranks of |d|, W⁺, its normal approximation with the tie correction); and why pairing
matters: a small shift on identical inputs that two independent arms cannot see."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from shipyard.stats.canary import mann_whitney_greater
from shipyard.stats.paired import (
    changed_numbers_test,
    changed_share_test,
    mcnemar_errors,
    paired_latency_test,
)


def signed_rank_by_hand(d: np.ndarray) -> tuple[float, float]:
    """W⁺ and the one-sided (greater) p of Wilcoxon's signed-rank test, zeros dropped, normal
    approximation with the tie correction, no continuity correction (Wilcoxon 1945)."""
    d = d[d != 0]
    n = d.size
    ranks = sps.rankdata(np.abs(d))
    w_plus = float(ranks[d > 0].sum())
    _, counts = np.unique(np.abs(d), return_counts=True)
    variance = n * (n + 1) * (2 * n + 1) / 24 - float((counts**3 - counts).sum()) / 48
    z = (w_plus - n * (n + 1) / 4) / math.sqrt(variance)
    return w_plus, float(sps.norm.sf(z))


class TestMcNemarErrors:
    @pytest.mark.parametrize(("b", "c"), [(8, 1), (3, 3), (0, 4), (12, 0), (1, 0)])
    def test_p_is_the_exact_binomial_tail_of_the_discordant_pairs(self, b: int, c: int) -> None:
        got = mcnemar_errors(b, c, 500)
        expected = sps.binomtest(b, b + c, 0.5, alternative="greater").pvalue
        by_hand = sum(math.comb(b + c, k) for k in range(b, b + c + 1)) / 2 ** (b + c)
        assert got.p_value == pytest.approx(expected, rel=1e-9)
        assert got.p_value == pytest.approx(by_hand, rel=1e-9)
        assert got.effect == pytest.approx((b - c) / 500)

    def test_no_discordant_pair_is_no_evidence(self) -> None:
        assert mcnemar_errors(0, 0, 100).p_value == 1.0


class TestChangedShare:
    @pytest.mark.parametrize(("k", "n", "floor"), [(30, 100, 0.1), (12, 100, 0.1), (0, 50, 0.1),
                                                   (5, 400, 0.0), (400, 400, 0.5)])  # fmt: skip
    def test_p_and_interval_are_scipys_exact_binomial(self, k: int, n: int, floor: float) -> None:
        got = changed_share_test(k, n, floor, confidence=0.98)
        if k:
            ref = sps.binomtest(k, n, floor, alternative="greater")
            assert got.p_value == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-300)
        else:
            assert got.p_value == 1.0
        ci = sps.binomtest(k, n).proportion_ci(confidence_level=0.98, method="exact")
        assert (got.ci_low, got.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-9, abs=1e-12)
        assert got.effect == k / n

    def test_a_share_below_its_floor_is_no_evidence_however_many_rows(self) -> None:
        assert changed_share_test(900, 10_000, 0.10).p_value > 0.99


class TestSignedRank:
    def test_changed_numbers_is_the_signed_rank_test_of_the_change_above_the_floor(self) -> None:
        rng = np.random.default_rng(1)
        stable = rng.normal(10, 2, 300)
        candidate = stable + rng.normal(0.1, 0.3, 300)
        got = changed_numbers_test(candidate, stable, 0.1)
        w, p = signed_rank_by_hand(np.abs(candidate - stable) / stable.std() - 0.1)
        assert got.statistic == pytest.approx(w)
        assert got.p_value == pytest.approx(p, rel=1e-9)
        assert got.effect == pytest.approx(np.median(np.abs(candidate - stable)) / stable.std())

    def test_identical_answers_are_no_evidence(self) -> None:
        values = np.linspace(0, 1, 50)
        assert changed_numbers_test(values, values, 0.1).p_value > 0.999
        assert changed_numbers_test(values, values, 0.0).p_value == 1.0

    def test_paired_latency_with_ties_matches_the_hand_computed_statistic(self) -> None:
        rng = np.random.default_rng(2)
        stable = np.round(rng.lognormal(0, 0.3, 200), 1)  # rounded: ties and zero differences
        candidate = np.round(stable * 1.05 + rng.normal(0, 0.05, 200), 1)
        got = paired_latency_test(candidate, stable)
        w, p = signed_rank_by_hand(candidate - stable)
        assert got.statistic == pytest.approx(w)
        assert got.p_value == pytest.approx(p, rel=1e-9)

    def test_pairing_sees_a_small_shift_that_independent_arms_miss(self) -> None:
        """+3 % on every request, over request-to-request variation of ±30 %: 200 pairs."""
        rng = np.random.default_rng(3)
        stable = rng.lognormal(np.log(20), 0.3, 200)
        candidate = stable * 1.03 * rng.lognormal(0, 0.01, 200)
        assert paired_latency_test(candidate, stable).p_value < 1e-6
        assert mann_whitney_greater(candidate, stable)[1] > 0.05
