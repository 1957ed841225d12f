"""Which drifted input explains a change in a model's predictions.

A diagnosis that ranks drifted columns by their effect size alone ranks the wrong ones first:
a column that is constant in training turns any change into an unbounded standardised effect,
and a column the model ignores can drift a lot without changing a single prediction. Two
kernels answer better:

- :func:`robust_effect` — W₁ standardised by a scale that cannot collapse to zero: the larger
  of the two sides' spreads, floored relative to the feature's own magnitude.
- :func:`explained_change` — put each drifted feature back to its reference distribution in
  the sampled current inputs and measure how far the model's predictions move (a permutation
  test of feature importance, Breiman 2001, with the reference's values instead of a shuffle
  of the current ones, as "prediction drift attribution" does; Vertex AI Model Monitoring
  ranks drifted features by feature attribution for the same reason).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from shipyard.errors import InvalidInput

Array = np.ndarray[Any, Any]

RELATIVE_FLOOR = 1e-3
"""The scale never falls below this fraction of the feature's magnitude (max |mean|)."""
ABSOLUTE_FLOOR = 1e-12
"""…nor below this, for a feature that is zero on both sides."""


def robust_scale(std_ref: float, std_cur: float, mean_ref: float, mean_cur: float) -> float:
    """``max(σ_ref, σ_cur, 10⁻³·max(|μ_ref|, |μ_cur|), 10⁻¹²)``.

    The spread of either side: a column constant in training but varying now is measured
    against the variation it has now (a change of a few of its values is a few tenths of
    that, not 10⁴). The relative floor keeps a constant-to-constant jump finite and measured
    against the size of the values. NaN spreads (no valid value) count as 0.
    """
    spreads = [s for s in (std_ref, std_cur) if s == s]
    magnitude = max((abs(m) for m in (mean_ref, mean_cur) if m == m), default=0.0)
    return max([*spreads, RELATIVE_FLOOR * magnitude, ABSOLUTE_FLOOR])


def robust_effect(
    w1: float, std_ref: float, std_cur: float, mean_ref: float, mean_cur: float
) -> float:
    """Wasserstein-1 distance over :func:`robust_scale`.

    >>> robust_effect(0.5, 1.0, 1.0, 0.0, 0.5)  # half a σ mean shift
    0.5
    >>> round(robust_effect(0.05, 0.0, 0.22, 0.0, 0.05), 3)  # constant in training, 5 % ones now
    0.227
    """
    return float(w1 / robust_scale(std_ref, std_cur, mean_ref, mean_cur))


def _distance(a: Array, b: Array) -> float:
    """Mean over rows of how far two predictions are: |a − b| for one number per row, half the
    L1 distance for several (the total variation distance of class probabilities), and 0/1
    for labels."""
    if a.dtype.kind in "fiu" and b.dtype.kind in "fiu":
        diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
        if diff.ndim == 2 and diff.shape[1] > 1:
            return float(np.mean(0.5 * diff.sum(axis=1)))
        return float(np.mean(diff))
    return float(np.mean(a.reshape(len(a), -1)[:, 0] != b.reshape(len(b), -1)[:, 0]))


def explained_change(
    predict: Callable[[Array], Any],
    current: Any,
    reference_draws: Mapping[int, Any],
) -> tuple[float, dict[int, float]]:
    """How far the predictions on ``current`` move when drifted features are put back.

    ``reference_draws[j]`` holds, for each row of ``current``, a value of feature ``j`` drawn
    from its reference distribution. With f the model, ``x`` the current rows and ``x⁽ʲ⁾``
    those rows with feature j replaced by its draws:

        change_j = mean_i d(f(xᵢ), f(xᵢ⁽ʲ⁾)),  total = mean_i d(f(xᵢ), f(xᵢ⁽ᵃˡˡ⁾))

    with d the absolute difference (one number per row), half the L1 distance (several: for
    class probabilities, the total variation distance) or 0/1 (labels). Returns ``total`` and
    each ``change_j``; ``change_j / total`` is the share of the prediction change that undoing
    feature j alone accounts for (interactions can make the shares sum past 1).

    >>> x = np.column_stack([np.full(4, 2.0), np.full(4, 5.0)])
    >>> total, each = explained_change(lambda a: 3 * a[:, 0], x, {0: np.zeros(4), 1: np.zeros(4)})
    >>> total, each
    (6.0, {0: 6.0, 1: 0.0})
    """
    x = np.asarray(current, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise InvalidInput("explained_change needs a non-empty (rows, features) array")
    draws = {}
    for j, values in reference_draws.items():
        v = np.asarray(values, dtype=np.float64)
        if not 0 <= j < x.shape[1] or v.shape != (len(x),):
            raise InvalidInput(f"reference draws of feature {j}: one value per current row")
        draws[j] = v

    def run(rows: Array) -> Array:
        out = np.asarray(predict(rows))
        return out.reshape(len(x), -1) if out.ndim > 1 else out

    base = run(x)
    each = {}
    everything = x.copy()
    for j, v in draws.items():
        moved = x.copy()
        moved[:, j] = v
        everything[:, j] = v
        each[j] = _distance(base, run(moved))
    total = _distance(base, run(everything)) if draws else 0.0
    return total, each
