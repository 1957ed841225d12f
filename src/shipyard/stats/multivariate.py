"""Drift that no single column shows: a change in how features move together.

A join that shifted rows, or a sensor swapped for one with the opposite sign of correlation,
leaves every marginal distribution as it was, so every univariate test passes. Two measures
look at the joint distribution:

- :class:`ReconstructionDrift` — PCA fitted on the reference; the current data's mean
  reconstruction error against limits taken from the reference's own chunks (NannyML's "data
  reconstruction drift").
- :func:`mmd_test` — the kernel two-sample test: the maximum mean discrepancy with a Gaussian
  (RBF) kernel, bandwidth by the median heuristic, p-value by permutation (Gretton et al. 2012).

Costs (docs/statistics.md): the PCA fit is one pass for the d×d covariance plus an
eigendecomposition, O(n·d² + d³); scoring is O(n·d·k). The MMD test works on a sample of m rows
per side and costs O(m²·d) for the kernel matrix plus O(B·m²) for B permutations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from shipyard.errors import InvalidInput

Array = np.ndarray[Any, Any]


def _matrix(x: Any, name: str, columns: int | None = None) -> Array:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise InvalidInput(f"{name} must be a non-empty (rows, columns) array, got {a.shape}")
    if columns is not None and a.shape[1] != columns:
        raise InvalidInput(f"{name} has {a.shape[1]} columns; the reference had {columns}")
    return a


@dataclass(frozen=True)
class MultivariateResult:
    """One multivariate measure's verdict: its statistic, the limits or p-value it was judged
    by, and whether the data drifted."""

    method: str
    statistic: float
    drifted: bool
    lower: float | None = None
    upper: float | None = None
    p_value: float | None = None
    rows: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "statistic": self.statistic,
            "drifted": self.drifted,
            "lower": self.lower,
            "upper": self.upper,
            "p_value": self.p_value,
            "rows": self.rows,
        }


class ReconstructionDrift:
    """Data reconstruction drift: PCA on the standardised reference, mean reconstruction error.

    Fit: missing values are imputed with the reference's column means; each column is
    standardised by its mean and standard deviation; the principal components that together
    explain ``variance_kept`` of the variance (NannyML's default 0.65) are kept. A row's error
    is the Euclidean distance between its standardised values and their projection back from
    those components, ``‖z − W Wᵀ z‖₂``; a data set's statistic is the mean error of its rows.

    The limits come from the reference's own chunks: the components are fitted on one half of
    the (shuffled) reference and the other half is cut into ``chunks`` chunks; the limits are
    the chunks' mean error ± ``z`` standard deviations of it (NannyML uses ± 3 σ). The held-out
    half keeps the limits honest (in-sample errors are smaller). A current data set of n rows is
    judged against the spread a chunk of n rows has: the chunks' σ times √(chunk rows / n), the
    standard error of a mean of independent row errors.

    Reference: NannyML, "Data Reconstruction with PCA",
    nannyml.readthedocs.io/en/stable/how_it_works/multivariate_drift.html.

    >>> rng = np.random.default_rng(0)
    >>> x = rng.multivariate_normal([0, 0], [[1, 0.9], [0.9, 1]], 4000)
    >>> flipped = x * np.array([1, -1])  # the same marginals, the opposite correlation
    >>> d = ReconstructionDrift().fit(x)
    >>> d.test(x[:1000]).drifted, d.test(flipped[:1000]).drifted
    (False, True)
    """

    def __init__(
        self, variance_kept: float = 0.65, chunks: int = 20, z: float = 3.0, seed: int = 0
    ) -> None:
        if not 0 < variance_kept <= 1:
            raise InvalidInput(f"variance_kept must be in (0, 1], got {variance_kept}")
        if chunks < 2:
            raise InvalidInput(f"chunks must be ≥ 2, got {chunks}")
        if z <= 0:
            raise InvalidInput(f"z must be > 0, got {z}")
        self.variance_kept = variance_kept
        self.chunks = chunks
        self.z = z
        self.seed = seed

    def fit(self, reference: Any) -> ReconstructionDrift:
        x = _matrix(reference, "reference")
        if x.shape[0] < 2 * self.chunks:
            raise InvalidInput(
                f"the reference needs at least {2 * self.chunks} rows, has {x.shape[0]}"
            )
        order = np.random.default_rng(self.seed).permutation(x.shape[0])
        half = x.shape[0] // 2
        fit_rows, held_out = x[order[:half]], x[order[half:]]
        mean = np.nanmean(fit_rows, axis=0)
        mean = np.where(np.isfinite(mean), mean, 0.0)
        filled = np.where(np.isfinite(fit_rows), fit_rows, mean)
        scale = filled.std(axis=0)
        # a constant column carries no variance to model: scale 1 keeps it at 0 after centring
        scale = np.where(scale > 1e-12 * np.maximum(1.0, np.abs(mean)), scale, 1.0)
        self.mean_, self.scale_ = mean, scale
        z = (filled - mean) / scale
        cov = z.T @ z / max(len(z) - 1, 1)
        values, vectors = np.linalg.eigh(cov)
        values, vectors = values[::-1].clip(min=0.0), vectors[:, ::-1]
        total = values.sum()
        if total <= 0:
            k = 1
        else:
            k = int(np.searchsorted(np.cumsum(values) / total, self.variance_kept - 1e-12) + 1)
        self.components_ = vectors[:, : min(k, x.shape[1])]
        errors = self.row_errors(held_out)
        chunk_rows = len(errors) // self.chunks
        means = errors[: chunk_rows * self.chunks].reshape(self.chunks, chunk_rows).mean(axis=1)
        self.chunk_rows_ = chunk_rows
        self.center_ = float(means.mean())
        self.chunk_std_ = float(means.std(ddof=1))
        return self

    def row_errors(self, data: Any) -> Array:
        """Each row's reconstruction error ``‖z − W Wᵀ z‖₂`` (standardised units)."""
        x = _matrix(data, "data", len(self.mean_))
        z = (np.where(np.isfinite(x), x, self.mean_) - self.mean_) / self.scale_
        residual = z - (z @ self.components_) @ self.components_.T
        return np.asarray(np.sqrt(np.einsum("ij,ij->i", residual, residual)))

    def limits(self, rows: int) -> tuple[float, float]:
        """The band a data set of ``rows`` rows stays inside when nothing changed."""
        half_width = self.z * self.chunk_std_ * math.sqrt(self.chunk_rows_ / max(rows, 1))
        return self.center_ - half_width, self.center_ + half_width

    def test(self, current: Any) -> MultivariateResult:
        errors = self.row_errors(current)
        statistic = float(errors.mean())
        lower, upper = self.limits(len(errors))
        return MultivariateResult(
            "reconstruction_error",
            statistic,
            not lower <= statistic <= upper,
            lower=lower,
            upper=upper,
            rows=len(errors),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "variance_kept": self.variance_kept,
            "chunks": self.chunks,
            "z": self.z,
            "seed": self.seed,
            "mean": self.mean_.tolist(),
            "scale": self.scale_.tolist(),
            "components": self.components_.tolist(),
            "chunk_rows": self.chunk_rows_,
            "center": self.center_,
            "chunk_std": self.chunk_std_,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReconstructionDrift:
        try:
            out = cls(float(data["variance_kept"]), int(data["chunks"]), float(data["z"]))
            out.seed = int(data["seed"])
            out.mean_ = np.asarray(data["mean"], dtype=np.float64)
            out.scale_ = np.asarray(data["scale"], dtype=np.float64)
            out.components_ = np.asarray(data["components"], dtype=np.float64).reshape(
                len(out.mean_), -1
            )
            out.chunk_rows_ = int(data["chunk_rows"])
            out.center_ = float(data["center"])
            out.chunk_std_ = float(data["chunk_std"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"not a reconstruction drift fit: {exc}") from None
        return out


def rbf_kernel(x: Array, y: Array, bandwidth: float) -> Array:
    """``k(a, b) = exp(−‖a − b‖² / (2σ²))`` for every row pair of ``x`` and ``y``."""
    sq = (
        np.einsum("ij,ij->i", x, x)[:, None]
        + np.einsum("ij,ij->i", y, y)[None, :]
        - 2.0 * (x @ y.T)
    )
    return np.asarray(np.exp(-np.maximum(sq, 0.0) / (2.0 * bandwidth**2)))


def median_bandwidth(pooled: Array) -> float:
    """The median heuristic: σ = the median Euclidean distance between distinct pooled rows
    (Gretton et al. 2012, section 8); 1 when every row is the same."""
    sq = (
        np.einsum("ij,ij->i", pooled, pooled)[:, None]
        + np.einsum("ij,ij->i", pooled, pooled)[None, :]
        - 2.0 * (pooled @ pooled.T)
    )
    upper = np.sqrt(np.maximum(sq[np.triu_indices(len(pooled), k=1)], 0.0))
    positive = upper[upper > 0]
    return float(np.median(positive)) if len(positive) else 1.0


def mmd2_unbiased(kernel: Array, m: int) -> float:
    """The unbiased MMD² of the pooled kernel matrix whose first ``m`` rows are one sample:

    MMD²_u = 1/(m(m−1)) Σ_{i≠j} k(xᵢ,xⱼ) + 1/(n(n−1)) Σ_{i≠j} k(yᵢ,yⱼ) − 2/(mn) Σ k(xᵢ,yⱼ)
    (Gretton et al. 2012, JMLR 13, eq. 3)."""
    n = kernel.shape[0] - m
    if m < 2 or n < 2:
        raise InvalidInput("the MMD needs at least two rows on each side")
    kxx, kyy, kxy = kernel[:m, :m], kernel[m:, m:], kernel[:m, m:]
    xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    yy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(xx + yy - 2.0 * kxy.mean())


def mmd_test(
    reference: Any,
    current: Any,
    *,
    sample_rows: int = 500,
    permutations: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
) -> MultivariateResult:
    """Kernel two-sample test: is the current data drawn from the reference's distribution?

    Up to ``sample_rows`` rows of each side (drawn without replacement) are standardised by the
    pooled sample's means and standard deviations (missing values imputed with the means);
    the statistic is the unbiased MMD² with a Gaussian kernel whose bandwidth is the median
    distance of the pooled sample. The p-value is ``(1 + #{b : MMD²_b ≥ MMD²}) / (1 + B)`` over
    ``B = permutations`` random relabellings of the pooled sample (an exact-level permutation
    test; Gretton et al. 2012, section 6; Phipson & Smyth 2010 for the +1).

    Reference: A. Gretton, K. Borgwardt, M. Rasch, B. Schölkopf, A. Smola, "A Kernel
    Two-Sample Test", JMLR 13 (2012) 723–773.

    >>> rng = np.random.default_rng(1)
    >>> x = rng.normal(size=(300, 3))
    >>> mmd_test(x, rng.normal(size=(300, 3))).drifted
    False
    >>> mmd_test(x, rng.normal(0.5, 1, size=(300, 3))).drifted
    True
    """
    x = _matrix(reference, "reference")
    y = _matrix(current, "current", x.shape[1])
    if sample_rows < 2 or permutations < 1 or not 0 < alpha < 1:
        raise InvalidInput("mmd_test needs sample_rows ≥ 2, permutations ≥ 1, 0 < alpha < 1")
    rng = np.random.default_rng(seed)
    if len(x) > sample_rows:
        x = x[rng.choice(len(x), sample_rows, replace=False)]
    if len(y) > sample_rows:
        y = y[rng.choice(len(y), sample_rows, replace=False)]
    # standardised by the pooled sample (a function of the pooled set only, so every
    # relabelling is judged on the same data and the permutation test keeps its level)
    pooled = np.vstack([x, y])
    mean = np.nanmean(pooled, axis=0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    pooled = np.where(np.isfinite(pooled), pooled, mean)
    scale = pooled.std(axis=0)
    pooled = (pooled - mean) / np.where(scale > 0, scale, 1.0)
    kernel = rbf_kernel(pooled, pooled, median_bandwidth(pooled))
    m, total = len(x), len(pooled)
    observed = mmd2_unbiased(kernel, m)
    # every permutation's statistic from the same kernel matrix: with s the 0/1 indicator of
    # the first sample, Σ_{x-block} k = sᵀKs and Σ_{cross} k = sᵀK(1 − s)
    labels = np.zeros((total, permutations))
    for b in range(permutations):
        labels[rng.choice(total, m, replace=False), b] = 1.0
    ks = kernel @ labels
    in_x = np.einsum("ib,ib->b", labels, ks)
    row_sums = kernel.sum(axis=1)
    cross = labels.T @ row_sums - in_x
    in_y = kernel.sum() - in_x - 2.0 * cross
    n = total - m
    diag = float(np.trace(kernel)) / total  # 1 for the RBF kernel
    stats = (
        (in_x - m * diag) / (m * (m - 1))
        + (in_y - n * diag) / (n * (n - 1))
        - 2.0 * cross / (m * n)
    )
    p_value = float((1 + np.count_nonzero(stats >= observed)) / (1 + permutations))
    return MultivariateResult("mmd_rbf", observed, p_value < alpha, p_value=p_value, rows=len(y))
