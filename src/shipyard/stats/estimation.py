"""A regressor's error estimated before its labels arrive: direct loss estimation (DLE).

CBPE (:func:`shipyard.stats.performance.cbpe`) reads a classifier's confidence; a regressor has
none. DLE learns it: on reference data with labels, a second model ("the loss model") learns to
predict each row's loss — absolute error |y − ŷ| for MAE, squared error (y − ŷ)² for RMSE —
from the row's features and the monitored model's prediction. On new data without labels the
estimates are the loss model's means: MAE ≈ mean ℓ̂₁, RMSE ≈ √(mean ℓ̂₂).

It catches covariate shift towards regions where the model is known to be worse (the
reference showed larger errors there), not concept drift (P(y|x) changing): that shows only
when labels arrive, which is why the monitor compares the estimate with the realised error
whenever a batch has labels.

Reference: NannyML, "Direct Loss Estimation (DLE)",
nannyml.readthedocs.io/en/stable/how_it_works/performance_estimation.html#direct-loss-estimation-dle
(NannyML fits LightGBM; any regressor with ``fit``/``predict`` works here — the kernels stay
free of learning libraries, so the caller hands in how to make one).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from shipyard.errors import InvalidInput

Array = np.ndarray[Any, Any]


class Regressor(Protocol):
    def fit(self, x: Array, y: Array) -> Any: ...

    def predict(self, x: Array) -> Any: ...


def _design(features: Any, predictions: Any) -> Array:
    x = np.asarray(features, dtype=np.float64)
    p = np.asarray(predictions, dtype=np.float64).reshape(-1)
    if x.ndim != 2 or len(x) == 0 or len(p) != len(x):
        raise InvalidInput("DLE needs (rows, features) features and one prediction per row")
    return np.column_stack([x, p])


class DirectLossEstimator:
    """Estimate a regressor's MAE and RMSE on unlabelled data.

    ``make_model`` returns a fresh regressor (scikit-learn's convention: ``fit(X, y)``,
    ``predict(X)``); one is fitted per loss. Predicted losses below 0 are clipped to 0.

    >>> class Mean:  # a loss model that predicts the reference's mean loss
    ...     def fit(self, x, y): self.m = y.mean(); return self
    ...     def predict(self, x): return np.full(len(x), self.m)
    >>> x = np.arange(8.0).reshape(-1, 1)
    >>> dle = DirectLossEstimator(Mean).fit(x, x[:, 0] + 1, x[:, 0])  # errors of 1 everywhere
    >>> dle.estimate(x, x[:, 0])
    {'mae': 1.0, 'rmse': 1.0}
    """

    def __init__(self, make_model: Callable[[], Regressor]) -> None:
        self.make_model = make_model

    def fit(self, features: Any, predictions: Any, labels: Any) -> DirectLossEstimator:
        x = _design(features, predictions)
        y = np.asarray(labels, dtype=np.float64).reshape(-1)
        if len(y) != len(x):
            raise InvalidInput("DLE needs one label per reference row")
        keep = np.isfinite(y) & np.isfinite(x[:, -1])
        if keep.sum() < 2:
            raise InvalidInput("DLE needs at least two labelled reference rows")
        x, residual = x[keep], y[keep] - x[keep, -1]
        self.abs_model_ = self.make_model()
        self.abs_model_.fit(x, np.abs(residual))
        self.sq_model_ = self.make_model()
        self.sq_model_.fit(x, residual**2)
        self.reference_ = {
            "mae": float(np.mean(np.abs(residual))),
            "rmse": float(math.sqrt(np.mean(residual**2))),
        }
        return self

    def row_losses(self, features: Any, predictions: Any) -> tuple[Array, Array]:
        """Each row's estimated absolute and squared error."""
        x = _design(features, predictions)
        absolute = np.clip(np.asarray(self.abs_model_.predict(x), dtype=np.float64), 0.0, None)
        squared = np.clip(np.asarray(self.sq_model_.predict(x), dtype=np.float64), 0.0, None)
        return absolute, squared

    def estimate(self, features: Any, predictions: Any) -> dict[str, float]:
        """``{"mae": …, "rmse": …}`` estimated on unlabelled rows."""
        absolute, squared = self.row_losses(features, predictions)
        return {"mae": float(absolute.mean()), "rmse": float(math.sqrt(squared.mean()))}


def realised_loss(labels: Any, predictions: Any) -> dict[str, float]:
    """The MAE and RMSE the labels show, on rows where both are finite."""
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    p = np.asarray(predictions, dtype=np.float64).reshape(-1)
    if len(y) != len(p):
        raise InvalidInput("one label per prediction")
    keep = np.isfinite(y) & np.isfinite(p)
    if not keep.any():
        raise InvalidInput("no row has both a label and a prediction")
    r = y[keep] - p[keep]
    return {"mae": float(np.mean(np.abs(r))), "rmse": float(math.sqrt(np.mean(r**2)))}
