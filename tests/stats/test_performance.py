"""The serving-quality kernels (stats/performance.py) checked against numpy and simulation:
Prometheus' histogram quantile, CBPE and the expected calibration error."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from shipyard.stats import cbpe, expected_calibration_error, histogram_quantile


class TestKernels:
    def test_histogram_quantile_matches_numpy_for_uniform_buckets(self) -> None:
        rng = np.random.default_rng(1)
        samples = rng.uniform(0, 0.01, 200_000)
        buckets = [0.0025, 0.005, 0.0075, 0.01, 0.02]
        counts = np.histogram(samples, [0, *buckets, np.inf])[0].tolist()
        for q in (0.5, 0.9, 0.99):
            got = histogram_quantile(q, buckets, counts)
            assert got == pytest.approx(np.quantile(samples, q), abs=1e-4)
        assert histogram_quantile(0.5, buckets, [0] * 6) is None

    def test_cbpe_estimates_realised_accuracy_and_f1_of_a_calibrated_model(self) -> None:
        rng = np.random.default_rng(2)
        p = rng.beta(2, 2, 50_000)
        y = rng.uniform(size=p.size) < p  # calibrated by construction
        est = cbpe(np.column_stack([1 - p, p]), [0, 1])
        yhat = p >= 0.5
        assert est["expected_accuracy"] == pytest.approx(accuracy_score(y, yhat), abs=0.01)
        assert est["expected_f1"] == pytest.approx(f1_score(y, yhat), abs=0.01)

    def test_calibration_error_tells_calibrated_from_overconfident(self) -> None:
        rng = np.random.default_rng(3)
        p = rng.uniform(size=20_000)
        assert expected_calibration_error(p, (rng.uniform(size=p.size) < p).astype(float)) < 0.02
        over = np.full(10_000, 0.95)
        y = (rng.uniform(size=over.size) < 0.5).astype(float)
        assert expected_calibration_error(over, y) == pytest.approx(0.45, abs=0.02)
