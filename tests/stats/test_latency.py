"""Fine latency histograms: bins of one relative width, mergeable, and tests on their values
that agree with scipy and with the unbinned data."""

from __future__ import annotations

import doctest
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from shipyard.stats import latency
from shipyard.stats.canary import latency_shift_test, mann_whitney_greater
from shipyard.stats.latency import LatencyHistogram

LATENCIES = st.lists(
    st.floats(min_value=1e-6, max_value=100.0, allow_nan=False), min_size=1, max_size=200
)


class TestLatencyHistogram:
    def test_docstring_examples_hold(self) -> None:
        result = doctest.testmod(latency)
        assert result.attempted > 0 and result.failed == 0

    @given(LATENCIES)
    @settings(max_examples=200, deadline=None)
    def test_each_value_stays_within_its_bins_relative_width(self, values: list[float]) -> None:
        h = LatencyHistogram(alpha=0.01).update_many(values)
        got = h.values_ms() / 1000.0
        want = np.sort(np.asarray(values))
        assert got.size == want.size == h.count
        gamma = 1.01 / 0.99
        assert np.all(got <= want * gamma * (1 + 1e-12))
        assert np.all(got >= want / gamma * (1 - 1e-12))
        for i, rep in h.representatives_ms().items():  # DDSketch's representative: within α
            low, high = gamma ** (i - 1), gamma**i
            assert abs(rep / 1000 / low - 1) <= 0.01 + 1e-12
            assert abs(rep / 1000 / high - 1) <= 0.01 + 1e-12

    @given(LATENCIES, LATENCIES)
    @settings(max_examples=100, deadline=None)
    def test_merging_is_binning_everything_at_once(self, a: list[float], b: list[float]) -> None:
        merged = LatencyHistogram().update_many(a).merge(LatencyHistogram().update_many(b))
        assert merged.counts_ == LatencyHistogram().update_many(a + b).counts_
        one_by_one = LatencyHistogram()
        for v in a + b:
            one_by_one.update(v)
        assert one_by_one.counts_ == merged.counts_
        again = LatencyHistogram.from_json(merged.to_json())
        assert again.counts_ == merged.counts_ and again.alpha == merged.alpha

    def test_odd_values_land_in_the_end_bins_and_histograms_of_two_widths_do_not_merge(
        self,
    ) -> None:
        h = LatencyHistogram().update_many([0.0, -1.0, math.nan, math.inf])
        assert h.count == 4
        try:
            h.merge(LatencyHistogram(alpha=0.02))
        except ValueError as exc:
            assert "accuracy" in str(exc)
        else:
            raise AssertionError("histograms of two widths merged")


class TestTestsOnBinnedValues:
    def test_mann_whitney_on_binned_values_matches_scipy(self) -> None:
        rng = np.random.default_rng(1)
        canary = LatencyHistogram().update_many(rng.lognormal(np.log(6e-4 * 1.05), 0.05, 400))
        stable = LatencyHistogram().update_many(rng.lognormal(np.log(6e-4), 0.05, 1200))
        u, p = mann_whitney_greater(canary.values_ms(), stable.values_ms())
        ref = sps.mannwhitneyu(
            canary.values_ms(), stable.values_ms(), alternative="greater", method="asymptotic"
        )
        assert u == ref.statistic
        assert math.isclose(p, ref.pvalue, rel_tol=1e-9)

    def test_a_sub_bucket_shift_is_seen_as_on_the_raw_latencies(self) -> None:
        """15 % slower, all inside (0.5, 1] ms: binned, the shift and its interval agree with
        the test on the raw latencies to within the bins' width."""
        rng = np.random.default_rng(2)
        raw_c = np.clip(rng.lognormal(np.log(6e-4 * 1.15), 0.04, 500), 5.1e-4, 9.9e-4)
        raw_s = np.clip(rng.lognormal(np.log(6e-4), 0.04, 1500), 5.1e-4, 9.9e-4)
        binned = latency_shift_test(
            LatencyHistogram().update_many(raw_c).values_ms(),
            LatencyHistogram().update_many(raw_s).values_ms(),
        )
        raw = latency_shift_test(raw_c * 1000, raw_s * 1000)
        assert raw.effect > 0.08 and raw.p_value < 1e-12
        assert binned.p_value < 1e-12
        width_ms = 0.0202 * 0.7  # one bin at about the latencies' scale
        for got, want in ((binned.effect, raw.effect), (binned.ci_low, raw.ci_low)):
            assert abs(got - want) < width_ms
        assert binned.ci_low < binned.effect < binned.ci_high
