"""Distances and two-sample tests between a reference and a current distribution.

Every function here is pure and works either on raw samples (1-d float arrays without NaN) or
on binned counts (two count vectors over the same bins, in the same order). The binned forms
are what :func:`shipyard.stats.compare` uses on profiles; the raw forms are the exact kernels,
tested against SciPy.

Conventions: ``p`` is the reference, ``q`` the current distribution. Logarithms are natural
unless a ``base`` is given. Shipyard's reports use the Jensen–Shannon *distance* in base 2
(bounded by 1), which is what NannyML reports; Evidently reports the natural-log distance
(bounded by √ln 2 ≈ 0.83) and TFDV the base-2 *divergence* (the square of ours).

P-values come from ``scipy.special``, the functions ``scipy.stats`` itself evaluates
(``chi2.sf(x, k)`` is ``chdtrc(k, x)``, ``kstwobign.sf(x)`` is ``kolmogorov(x)``): importing
``scipy.stats`` costs a command about half a second; only :func:`ks_2samp`, whose exact
small-sample p-value lives in ``scipy.stats`` alone, loads it, when called.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special

from shipyard.errors import InvalidInput

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class TestResult:
    """A two-sample test's statistic and its (unadjusted) p-value."""

    statistic: float
    p_value: float


def _counts_pair(reference: ArrayLike, current: ArrayLike) -> tuple[FloatArray, FloatArray]:
    r = np.asarray(reference, dtype=np.float64)
    c = np.asarray(current, dtype=np.float64)
    if r.ndim != 1 or r.shape != c.shape:
        raise InvalidInput(
            f"count vectors must be 1-d and of equal length, got {r.shape} and {c.shape}"
        )
    if (r < 0).any() or (c < 0).any() or not np.isfinite(r).all() or not np.isfinite(c).all():
        raise InvalidInput("counts must be finite and non-negative")
    if r.sum() <= 0 or c.sum() <= 0:
        raise InvalidInput("both count vectors need at least one observation")
    return r, c


def _sample(values: ArrayLike, name: str) -> FloatArray:
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise InvalidInput(f"{name} sample is empty")
    if not np.isfinite(x).all():
        raise InvalidInput(f"{name} sample contains NaN or ±inf; drop or count them first")
    return x


def psi(reference_counts: ArrayLike, current_counts: ArrayLike) -> float:
    """Population stability index over shared bins.

    PSI = Σᵢ (pᵢ − qᵢ) · ln(pᵢ / qᵢ), with p, q the bin shares. Empty bins are replaced, per
    vector and without renormalising, by ``min_nonzero / 1e6`` when the smallest non-zero share
    is ≤ 1e-4, else by 1e-4 — the rule of Evidently 0.7.23, so that values match its reports.
    Reference: Yurdakul (2018), "Statistical properties of population stability index".

    >>> round(psi([50, 50], [40, 60]), 6)
    0.040547
    """
    r, c = _counts_pair(reference_counts, current_counts)
    p = _fill_empty(r / r.sum())
    q = _fill_empty(c / c.sum())
    return float(np.sum((p - q) * np.log(p / q)))


def _fill_empty(share: FloatArray) -> FloatArray:
    nonzero = share[share > 0]
    smallest = float(nonzero.min())
    eps = smallest / 1e6 if smallest <= 1e-4 else 1e-4
    return np.where(share > 0, share, eps)


def jensen_shannon(
    reference_counts: ArrayLike, current_counts: ArrayLike, base: float = 2.0
) -> float:
    """Jensen–Shannon *distance* √JSD between two binned distributions, log in ``base``.

    JSD(p, q) = ½ KL(p ‖ m) + ½ KL(q ‖ m), m = (p + q) / 2; the distance is its square root.
    Base 2 (the default) bounds it by 1. Reference: Lin (1991), IEEE Trans. Inf. Theory 37(1);
    equal to ``scipy.spatial.distance.jensenshannon(p, q, base)``.

    >>> jensen_shannon([1, 0], [0, 1])
    1.0
    """
    r, c = _counts_pair(reference_counts, current_counts)
    p, q = r / r.sum(), c / c.sum()
    m = (p + q) / 2
    kl_pm = _kl_terms(p, m)
    kl_qm = _kl_terms(q, m)
    jsd = max((kl_pm + kl_qm) / 2 / math.log(base), 0.0)
    return float(math.sqrt(jsd))


def _kl_terms(p: FloatArray, m: FloatArray) -> float:
    # Σ p·ln(p/m) over p > 0 (where p > 0, m ≥ p/2 > 0); 0·ln 0 = 0
    keep = p > 0
    return float(np.sum(p[keep] * np.log(p[keep] / m[keep])))


def hellinger(reference_counts: ArrayLike, current_counts: ArrayLike) -> float:
    """Hellinger distance H = ‖√p − √q‖₂ / √2, in [0, 1].

    Reference: Hellinger (1909); the definition NannyML 0.13 uses.

    >>> hellinger([1, 0], [0, 1])
    1.0
    """
    r, c = _counts_pair(reference_counts, current_counts)
    diff = np.sqrt(r / r.sum()) - np.sqrt(c / c.sum())
    return float(np.sqrt(np.sum(diff * diff)) / math.sqrt(2))


def l_infinity(reference_counts: ArrayLike, current_counts: ArrayLike) -> float:
    """L-infinity distance max |pᵢ − qᵢ| between shares, as TFDV defines it for categories.

    Reference: TensorFlow Data Validation, ``infinity_norm`` in its skew/drift comparators.

    >>> l_infinity([1, 1], [1, 3])
    0.25
    """
    r, c = _counts_pair(reference_counts, current_counts)
    return float(np.max(np.abs(r / r.sum() - c / c.sum())))


def chi_square(reference_counts: ArrayLike, current_counts: ArrayLike) -> TestResult:
    """Chi-square test of homogeneity on the 2×K table (reference, current) × bins.

    X² = Σ (O − E)² / E with E the row total × column total / grand total, K − 1 degrees of
    freedom after dropping bins empty on both sides; no continuity correction. Equal to
    ``scipy.stats.chi2_contingency(table, correction=False)``. Reference: Pearson (1900).
    """
    r, c = _counts_pair(reference_counts, current_counts)
    keep = (r + c) > 0
    table = np.vstack([r[keep], c[keep]])
    dof = table.shape[1] - 1
    if dof == 0:
        return TestResult(0.0, 1.0)
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    stat = float(np.sum((table - expected) ** 2 / expected))
    return TestResult(stat, float(special.chdtrc(dof, stat)))


def chi_square_goodness_of_fit(
    reference_counts: ArrayLike, current_counts: ArrayLike
) -> TestResult:
    """Goodness-of-fit X² of the current counts against the reference shares (Evidently's test).

    X² = Σ (cᵢ − eᵢ)² / eᵢ with eᵢ = rᵢ · n_cur / n_ref, K − 1 degrees of freedom. It treats the
    reference as exact, so it is anti-conservative; :func:`chi_square` is what Shipyard uses.
    Needs every reference bin non-empty. Equal to ``scipy.stats.chisquare(c, e)``.
    """
    r, c = _counts_pair(reference_counts, current_counts)
    if (r == 0).any():
        raise InvalidInput("goodness-of-fit chi-square needs every reference bin non-empty")
    expected = r * c.sum() / r.sum()
    stat = float(np.sum((c - expected) ** 2 / expected))
    return TestResult(stat, float(special.chdtrc(r.size - 1, stat)))


def ks_binned(reference_counts: ArrayLike, current_counts: ArrayLike) -> TestResult:
    """Two-sample Kolmogorov–Smirnov test on counts over ordered bins.

    D = maxⱼ |F_ref(j) − F_cur(j)| over the bins' cumulative shares; p from the asymptotic
    Kolmogorov distribution at √(n·m/(n+m))·D (Smirnov 1948). Binning can only lower D, so the
    test is conservative; with one bin per distinct value, D equals the exact statistic of
    ``scipy.stats.ks_2samp``.
    """
    r, c = _counts_pair(reference_counts, current_counts)
    n, m = r.sum(), c.sum()
    d = float(np.max(np.abs(np.cumsum(r) / n - np.cumsum(c) / m)))
    en = math.sqrt(n * m / (n + m))
    return TestResult(d, float(special.kolmogorov(en * d)))


def ks_2samp(reference: ArrayLike, current: ArrayLike) -> TestResult:
    """Exact two-sample KS statistic D = sup |F_ref − F_cur| on raw samples, two-sided p-value.

    D is computed from the merged order statistics; the p-value is SciPy's (exact for small
    samples, asymptotic otherwise), so both match ``scipy.stats.ks_2samp``. Reference:
    Hodges (1958), "The significance probability of the Smirnov two-sample test".
    """
    x = np.sort(_sample(reference, "reference"))
    y = np.sort(_sample(current, "current"))
    grid = np.concatenate([x, y])
    d = float(
        np.max(
            np.abs(
                np.searchsorted(x, grid, side="right") / x.size
                - np.searchsorted(y, grid, side="right") / y.size
            )
        )
    )
    from scipy import stats  # the exact small-sample distribution is only there

    p = stats.ks_2samp(x, y).pvalue
    return TestResult(d, float(p))


def wasserstein(reference: ArrayLike, current: ArrayLike) -> float:
    """Wasserstein-1 (earth mover's) distance ∫ |F_ref(t) − F_cur(t)| dt between raw samples.

    Computed exactly on the merged sorted support. Equal to
    ``scipy.stats.wasserstein_distance``. Reference: Villani (2009), Optimal Transport, §6.
    """
    x = np.sort(_sample(reference, "reference"))
    y = np.sort(_sample(current, "current"))
    support = np.sort(np.concatenate([x, y]))
    widths = np.diff(support)
    fx = np.searchsorted(x, support[:-1], side="right") / x.size
    fy = np.searchsorted(y, support[:-1], side="right") / y.size
    return float(np.sum(np.abs(fx - fy) * widths))


def wasserstein_weighted(
    reference_values: ArrayLike,
    reference_weights: ArrayLike,
    current_values: ArrayLike,
    current_weights: ArrayLike,
) -> float:
    """W₁ between two weighted discrete distributions (atoms at ``values`` with ``weights``).

    W₁ = ∫ |F_ref(t) − F_cur(t)| dt with F the weighted empirical CDFs. Profiles call it with one
    atom per histogram bin at the bin's mean; since bin means keep each side's overall mean
    exactly, the estimate is never below |Δmean|. Equal to
    ``scipy.stats.wasserstein_distance(u, v, u_weights, v_weights)``.
    """
    x, wx = _weighted(reference_values, reference_weights, "reference")
    y, wy = _weighted(current_values, current_weights, "current")
    support = np.unique(np.concatenate([x, y]))
    if support.size < 2:
        return 0.0
    cx = np.concatenate([[0.0], np.cumsum(wx)])
    cy = np.concatenate([[0.0], np.cumsum(wy)])
    fx = cx[np.searchsorted(x, support[:-1], side="right")] / cx[-1]
    fy = cy[np.searchsorted(y, support[:-1], side="right")] / cy[-1]
    return float(np.sum(np.abs(fx - fy) * np.diff(support)))


def _weighted(values: ArrayLike, weights: ArrayLike, name: str) -> tuple[FloatArray, FloatArray]:
    v = _sample(values, name)
    w = np.asarray(weights, dtype=np.float64).ravel()
    if w.shape != v.shape or (w < 0).any() or w.sum() <= 0:
        raise InvalidInput(f"{name} weights must match the values, be ≥ 0 and not all zero")
    order = np.argsort(v, kind="stable")
    return v[order], w[order]


def wasserstein_normalised(reference: ArrayLike, current: ArrayLike) -> float:
    """W₁(ref, cur) / max(σ_ref, 0.001), σ with ddof = 0 — Evidently's normalised Wasserstein.

    Unitless: 0.1 means the mass moved on average a tenth of the reference's standard deviation
    (a pure mean shift of δσ gives δ).
    """
    x = _sample(reference, "reference")
    return wasserstein(x, current) / max(float(np.std(x)), 0.001)


def wasserstein_from_quantiles(
    reference_quantiles: ArrayLike, current_quantiles: ArrayLike
) -> float:
    """W₁ = ∫₀¹ |F⁻¹_ref(u) − F⁻¹_cur(u)| du estimated from quantiles at the same evenly spaced
    mid-point ranks u = (i + ½)/k (the midpoint rule on the quantile-function form of W₁).
    """
    a = np.asarray(reference_quantiles, dtype=np.float64)
    b = np.asarray(current_quantiles, dtype=np.float64)
    if a.shape != b.shape or a.size == 0:
        raise InvalidInput("quantile vectors must be non-empty and of equal length")
    return float(np.mean(np.abs(a - b)))
