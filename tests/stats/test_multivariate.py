"""Multivariate drift: the MMD kernels against a direct scipy computation, PCA reconstruction on
a known case, a rotation that no marginal shows, and no false alarm over ten i.i.d. batches."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import cdist, pdist

from shipyard.errors import InvalidInput
from shipyard.stats import DatasetProfile, compare
from shipyard.stats.multivariate import (
    ReconstructionDrift,
    median_bandwidth,
    mmd2_unbiased,
    mmd_test,
    rbf_kernel,
)


def correlated(rng: np.random.Generator, n: int, columns: int = 6, rho: float = 0.8) -> np.ndarray:
    """Pairs of columns (0,1), (2,3), … correlated by ``rho``; every marginal N(0, 1)."""
    cov = np.eye(columns)
    for j in range(0, columns - 1, 2):
        cov[j, j + 1] = cov[j + 1, j] = rho
    return rng.multivariate_normal(np.zeros(columns), cov, n)


def rotated(x: np.ndarray) -> np.ndarray:
    """Column 1 negated: each marginal (symmetric about 0) unchanged, the pair's correlation
    flipped from +ρ to −ρ."""
    out = x.copy()
    out[:, 1] = -out[:, 1]
    return out


class TestMMD:
    def test_unbiased_mmd2_equals_a_direct_computation(self) -> None:
        rng = np.random.default_rng(0)
        x, y = rng.normal(size=(5, 2)), rng.normal(0.5, 1, size=(4, 2))
        sigma = 1.3
        k = lambda a, b: np.exp(-cdist(a, b, "sqeuclidean") / (2 * sigma**2))  # noqa: E731
        m, n = len(x), len(y)
        xx = sum(k(x[i : i + 1], x[j : j + 1])[0, 0] for i in range(m) for j in range(m) if i != j)
        yy = sum(k(y[i : i + 1], y[j : j + 1])[0, 0] for i in range(n) for j in range(n) if i != j)
        xy = k(x, y).sum()
        expected = xx / (m * (m - 1)) + yy / (n * (n - 1)) - 2 * xy / (m * n)
        pooled = np.vstack([x, y])
        assert mmd2_unbiased(rbf_kernel(pooled, pooled, sigma), m) == pytest.approx(expected)

    def test_median_bandwidth_is_scipys_median_pairwise_distance(self) -> None:
        pooled = np.random.default_rng(1).normal(size=(30, 3))
        assert median_bandwidth(pooled) == pytest.approx(np.median(pdist(pooled)))

    def test_permutation_p_value_equals_relabelling_one_by_one(self) -> None:
        """The vectorised permutations give what recomputing MMD² per relabelling gives."""
        rng = np.random.default_rng(2)
        x, y = rng.normal(size=(12, 2)), rng.normal(0.3, 1, size=(10, 2))
        got = mmd_test(x, y, permutations=50, seed=7)
        pooled = np.vstack([x, y])
        pooled = (pooled - pooled.mean(axis=0)) / pooled.std(axis=0)
        kernel = rbf_kernel(pooled, pooled, median_bandwidth(pooled))
        observed = mmd2_unbiased(kernel, 12)
        draws = np.random.default_rng(7)
        stats = []
        for _ in range(50):
            first = draws.choice(22, 12, replace=False)
            order = np.concatenate([first, np.setdiff1d(np.arange(22), first)])
            stats.append(mmd2_unbiased(kernel[np.ix_(order, order)], 12))
        assert got.statistic == pytest.approx(observed)
        assert got.p_value == pytest.approx((1 + sum(s >= observed for s in stats)) / 51)

    def test_too_few_rows_or_mismatched_columns_are_rejected(self) -> None:
        with pytest.raises(InvalidInput):
            mmd_test(np.zeros((1, 2)), np.zeros((5, 2)))
        with pytest.raises(InvalidInput, match="columns"):
            mmd_test(np.zeros((5, 2)), np.zeros((5, 3)))


class TestReconstruction:
    def test_a_rank_one_reference_keeps_its_line_and_errs_off_it(self) -> None:
        """Points on the line x₁ = x₀ (plus a little noise): one component, (1, 1)/√2; a row
        at standardised (1, −1) lies off the line by √2."""
        rng = np.random.default_rng(3)
        t = rng.normal(size=4000)
        x = np.column_stack([t, t + 1e-3 * rng.normal(size=4000)])
        fit = ReconstructionDrift().fit(x)
        assert fit.components_.shape == (2, 1)
        assert abs(fit.components_[:, 0] @ np.array([1, 1]) / np.sqrt(2)) == pytest.approx(1)
        off = fit.mean_ + fit.scale_ * np.array([1.0, -1.0])
        assert fit.row_errors(off[None, :])[0] == pytest.approx(np.sqrt(2), rel=1e-3)

    def test_components_are_numpys_svd_of_the_standardised_fit_half(self) -> None:
        x = correlated(np.random.default_rng(4), 3000)
        fit = ReconstructionDrift(variance_kept=0.99).fit(x)
        half = x[np.random.default_rng(0).permutation(len(x))[: len(x) // 2]]
        z = (half - half.mean(axis=0)) / half.std(axis=0)
        _, _, vt = np.linalg.svd(z, full_matrices=False)
        k = fit.components_.shape[1]
        overlap = np.abs(vt[:k] @ fit.components_)  # sign of each component is arbitrary
        assert np.allclose(np.diag(overlap), 1.0, atol=1e-6)

    def test_the_fit_survives_json(self) -> None:
        x = correlated(np.random.default_rng(5), 1000)
        fit = ReconstructionDrift().fit(x)
        again = ReconstructionDrift.from_json(fit.to_json())
        assert again.test(x[:300]) == fit.test(x[:300])
        with pytest.raises(InvalidInput):
            ReconstructionDrift.from_json({"mean": [0]})

    def test_a_reference_too_small_to_chunk_is_rejected(self) -> None:
        with pytest.raises(InvalidInput, match="at least 40 rows"):
            ReconstructionDrift().fit(np.zeros((10, 2)))


class TestRotation:
    """The issue's case: a change in how features move together, every marginal intact."""

    def test_a_rotation_is_flagged_though_no_marginal_moved(self) -> None:
        reference = correlated(np.random.default_rng(10), 20_000)
        rng = np.random.default_rng(11)
        current = rotated(correlated(rng, 2000))
        names = [f"f{j}" for j in range(reference.shape[1])]
        ref_profile = DatasetProfile.from_frame(pd.DataFrame(reference, columns=names))
        cur_profile = DatasetProfile.from_frame(
            pd.DataFrame(current, columns=names), reference=ref_profile
        )
        assert compare(ref_profile, cur_profile).drifted_columns == []
        assert ReconstructionDrift().fit(reference).test(current).drifted
        assert mmd_test(reference, current, alpha=0.01).drifted

    def test_ten_iid_batches_raise_no_false_alarm(self) -> None:
        reference = correlated(np.random.default_rng(10), 20_000)
        fit = ReconstructionDrift().fit(reference)
        rng = np.random.default_rng(12)
        flagged = []
        for b in range(10):
            batch = correlated(rng, 2000)
            pca, mmd = fit.test(batch), mmd_test(reference, batch, alpha=0.01, seed=b)
            flagged += [(b, r.method) for r in (pca, mmd) if r.drifted]
        assert flagged == []
