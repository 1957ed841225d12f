"""Robust effect sizes and prediction-change attribution (the diagnosis' kernels)."""

from __future__ import annotations

import numpy as np
import pytest

from shipyard.errors import InvalidInput
from shipyard.stats.attribution import explained_change, robust_effect, robust_scale
from shipyard.stats.divergence import wasserstein


def test_a_column_constant_in_training_is_measured_against_its_current_spread() -> None:
    ref = np.zeros(1000)
    cur = np.where(np.arange(1000) < 50, 1.0, 0.0)  # 5 % ones
    w1 = wasserstein(ref, cur)
    effect = robust_effect(w1, ref.std(), cur.std(), ref.mean(), cur.mean())
    assert effect == pytest.approx(0.05 / cur.std())
    assert effect < 0.25  # W1 / max(σ_ref, 0.001) would say 50


def test_a_mean_shift_of_half_a_sigma_is_half() -> None:
    rng = np.random.default_rng(0)
    ref, cur = rng.normal(size=50_000), rng.normal(0.5, 1.0, 50_000)
    effect = robust_effect(wasserstein(ref, cur), ref.std(), cur.std(), ref.mean(), cur.mean())
    assert effect == pytest.approx(0.5, abs=0.03)


def test_the_scale_never_collapses() -> None:
    assert robust_scale(0.0, 0.0, 0.0, 0.0) == 1e-12
    assert robust_scale(0.0, 0.0, 1000.0, 1001.0) == pytest.approx(1.001)
    assert robust_scale(float("nan"), 2.0, float("nan"), 1.0) == 2.0


def test_explained_change_puts_each_feature_back_and_all_of_them() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 3))
    draws = {0: rng.normal(size=200), 2: rng.normal(size=200)}

    def predict(a: np.ndarray) -> np.ndarray:
        return 2 * a[:, 0] + 0 * a[:, 2]

    total, each = explained_change(predict, x, draws)
    expected = np.mean(np.abs(2 * x[:, 0] - 2 * draws[0]))
    assert total == pytest.approx(expected) and each[0] == pytest.approx(expected)
    assert each[2] == 0.0


def test_class_predictions_count_the_share_that_changed() -> None:
    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    total, each = explained_change(
        lambda a: np.where(a[:, 0] > 1.5, "yes", "no"), x, {0: np.zeros(4)}
    )
    assert total == each[0] == 0.5


def test_draws_must_match_the_rows() -> None:
    with pytest.raises(InvalidInput):
        explained_change(lambda a: a[:, 0], np.zeros((3, 2)), {0: np.zeros(2)})


def test_class_probabilities_compare_by_total_variation() -> None:
    x = np.array([[0.0], [1.0]])

    def proba(a: np.ndarray) -> np.ndarray:
        p = np.clip(a[:, 0] * 0.5 + 0.25, 0, 1)
        return np.column_stack([1 - p, p])

    total, _ = explained_change(proba, x, {0: np.array([1.0, 1.0])})
    assert total == pytest.approx(0.25)  # row 0 moves 0.25 → 0.75: TV 0.5; row 1 unchanged
