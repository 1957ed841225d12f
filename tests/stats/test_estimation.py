"""Direct loss estimation: on a scripted covariate shift towards the region where the regressor
errs more, the estimated MAE and RMSE land within 10 % of the realised ones, before labels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import LinearRegression
from threadpoolctl import threadpool_limits

from shipyard.errors import InvalidInput
from shipyard.stats.estimation import DirectLossEstimator, realised_loss

TOLERANCE = 0.10
"""The estimate's stated accuracy: within 10 % of the realised loss."""


def scripted(rng: np.random.Generator, n: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    """y = 2x₀ + x₁ + ε with ε's spread growing with |x₀| (0.2 + |x₀|): a linear model is right
    on average everywhere but errs more far from 0, where the shift moves the data."""
    x = rng.normal(size=(n, 3))
    x[:, 0] += shift
    return x, 2 * x[:, 0] + x[:, 1] + rng.normal(size=n) * (0.2 + np.abs(x[:, 0]))


def loss_model() -> HistGradientBoostingRegressor:
    return HistGradientBoostingRegressor(
        max_iter=50, max_leaf_nodes=15, early_stopping=False, random_state=0
    )


def test_dle_estimates_the_loss_of_a_shifted_batch_within_tolerance() -> None:
    rng = np.random.default_rng(0)
    model = LinearRegression().fit(*scripted(rng, 3000, 0.0))
    x_ref, y_ref = scripted(rng, 2000, 0.0)
    x_cur, y_cur = scripted(rng, 4000, 1.0)  # labels withheld from the estimator
    with threadpool_limits(limits=1, user_api="openmp"):  # as the monitor runs it
        dle = DirectLossEstimator(loss_model).fit(x_ref, model.predict(x_ref), y_ref)
        estimate = dle.estimate(x_cur, model.predict(x_cur))
    realised = realised_loss(y_cur, model.predict(x_cur))
    for metric in ("mae", "rmse"):
        assert estimate[metric] == pytest.approx(realised[metric], rel=TOLERANCE)
        # and it saw the loss grow: the shifted batch is ≥ 25 % worse than the reference
        assert estimate[metric] > 1.25 * dle.reference_[metric]


def test_realised_loss_is_mae_and_rmse_by_hand() -> None:
    got = realised_loss([1.0, 2.0, np.nan, 4.0], [0.0, 4.0, 1.0, 4.0])
    assert got == {"mae": pytest.approx(1.0), "rmse": pytest.approx(math.sqrt(5 / 3))}


def test_mismatched_or_unlabelled_input_is_rejected() -> None:
    dle = DirectLossEstimator(loss_model)
    with pytest.raises(InvalidInput):
        dle.fit(np.zeros((3, 2)), np.zeros(2), np.zeros(3))
    with pytest.raises(InvalidInput, match="two labelled"):
        dle.fit(np.zeros((3, 2)), np.zeros(3), np.full(3, np.nan))
