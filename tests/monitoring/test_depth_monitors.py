"""The monitors that read a reference's sampled rows: multivariate drift (on by default for a
data set of few columns) and the loss of a regressor estimated before its labels arrive."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from monitoring_testkit import publisher
from sklearn.linear_model import LinearRegression
from sqlalchemy import select

from shipyard.errors import InvalidInput
from shipyard.store.tables import MetricPoint
from shipyard.workspace import Workspace


def pairs(rng: np.random.Generator, n: int, flip: bool = False) -> pd.DataFrame:
    cov = np.array([[1, 0.8, 0, 0], [0.8, 1, 0, 0], [0, 0, 1, 0.8], [0, 0, 0.8, 1]])
    x = rng.multivariate_normal(np.zeros(4), cov, n)
    if flip:  # the same marginals, the first pair's correlation reversed
        x[:, 1] = -x[:, 1]
    return pd.DataFrame(x, columns=["a", "b", "c", "d"])


def last_points(ws: Workspace, name: str) -> dict[str, float]:
    with ws.store.session() as s:
        rows = s.scalars(
            select(MetricPoint).where(MetricPoint.name == name).order_by(MetricPoint.id)
        )
        return {r.labels_key: r.value for r in rows}


class TestMultivariateDrift:
    def test_a_rotated_batch_alerts_and_an_iid_one_does_not(self, ws: Workspace) -> None:
        rng = np.random.default_rng(0)
        observe = publisher(ws, "data")
        observe("p", "sensors", pairs(rng, 5000), role="reference")
        same = observe("p", "sensors", pairs(rng, 1000))
        verdicts = {c.monitor: c for c in same.checks}
        assert verdicts["multivariate_drift"].status == "ok"
        assert verdicts["feature_drift"].status == "ok"
        flipped = observe("p", "sensors", pairs(rng, 1000, flip=True))
        verdicts = {c.monitor: c for c in flipped.checks}
        assert verdicts["feature_drift"].status == "ok"  # no column shows it
        check = verdicts["multivariate_drift"]
        assert check.status == "alert"
        assert "features move together differently" in check.summary
        drift = last_points(ws, "shipyard_multivariate_drift")
        assert drift["dataset=sensors,method=reconstruction_error,pipeline=p"] == 1.0
        assert drift["dataset=sensors,method=mmd_rbf,pipeline=p"] == 1.0

    def test_a_data_set_wider_than_max_columns_is_not_judged(self, sqlite_ws: Workspace) -> None:
        rng = np.random.default_rng(1)
        observe = publisher(sqlite_ws, "data", {"multivariate_drift": {"max_columns": 3}})
        observe("p", "sensors", pairs(rng, 500), role="reference")
        seen = observe("p", "sensors", pairs(rng, 500, flip=True))
        assert "multivariate_drift" not in [c.monitor for c in seen.checks]


def regression(rng: np.random.Generator, n: int, shift: float, slope: float = 2.0) -> pd.DataFrame:
    x = rng.normal(size=(n, 2))
    x[:, 0] += shift
    y = slope * x[:, 0] + x[:, 1] + rng.normal(size=n) * (0.2 + np.abs(x[:, 0]))
    return pd.DataFrame({"x0": x[:, 0], "x1": x[:, 1], "y": y})


class TestPerformanceEstimation:
    @pytest.fixture
    def scored(self, ws: Workspace):  # type: ignore[no-untyped-def]
        rng = np.random.default_rng(2)
        train = regression(rng, 3000, 0.0)
        model = LinearRegression().fit(train[["x0", "x1"]], train["y"])
        observe = publisher(ws, "data", {"multivariate_drift": False})

        def score(frame: pd.DataFrame) -> pd.DataFrame:
            return frame.assign(pred=model.predict(frame[["x0", "x1"]]))

        observe("p", "scores", score(regression(rng, 2000, 0.0)), role="reference", label="y",
                prediction="pred")  # fmt: skip
        return rng, observe, score

    def test_a_shifted_batch_is_estimated_worse_before_labels_and_confirmed_after(
        self, ws: Workspace, scored
    ) -> None:  # type: ignore[no-untyped-def]
        rng, observe, score = scored
        batch = score(regression(rng, 2000, 1.2))
        before = observe("p", "scores", batch.drop(columns="y"), prediction="pred")
        check = next(c for c in before.checks if c.monitor == "performance_estimation")
        assert check.status == "alert" and "estimated mae" in check.summary
        ratio = last_points(ws, "shipyard_estimated_loss_ratio")
        assert ratio["dataset=scores,metric=mae,pipeline=p"] > 1.2
        after = observe("p", "scores", batch, label="y", prediction="pred")
        check = next(c for c in after.checks if c.monitor == "performance_estimation")
        realised, estimate = check.evidence["realised"], check.evidence["estimate"]
        assert estimate["mae"] == pytest.approx(realised["mae"], rel=0.1)
        assert check.status == "alert" and "labels confirm" in check.summary

    def test_concept_drift_shows_as_an_estimate_the_labels_contradict(
        self, ws: Workspace, scored
    ) -> None:  # type: ignore[no-untyped-def]
        rng, observe, score = scored
        changed = regression(rng, 2000, 0.0, slope=-1.0)  # P(y|x) changed, x did not
        seen = observe("p", "scores", score(changed), label="y", prediction="pred")
        check = next(c for c in seen.checks if c.monitor == "performance_estimation")
        assert "no longer describes the data" in check.summary
        assert check.evidence["realised"]["mae"] > 2 * check.evidence["estimate"]["mae"]

    def test_a_prediction_column_that_is_not_there_is_refused(self, sqlite_ws: Workspace) -> None:
        observe = publisher(sqlite_ws, "data")
        with pytest.raises(InvalidInput, match="prediction column"):
            observe("p", "scores", regression(np.random.default_rng(3), 50, 0.0), prediction="p")
