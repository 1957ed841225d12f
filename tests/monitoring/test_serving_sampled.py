"""A served regressor judged on its sampled requests against its reference rows, over a socket:
a shifted input stream raises the estimated-loss alert before labels and the late labels
confirm it within the stated tolerance; a rotation of its correlated inputs (every marginal
unchanged) is flagged by the multivariate measures and i.i.d. traffic is not."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LinearRegression
from sqlalchemy import func, select

from serving.conftest import Running, bearer
from shipyard.alerting.config import AlertingConfig, build_config
from shipyard.alerting.cycle import evaluate
from shipyard.alerting.defaults import default_rules
from shipyard.checks import Check
from shipyard.clock import FakeClock
from shipyard.monitoring import ServingMonitor
from shipyard.monitoring.config import resolve_monitors
from shipyard.monitoring.observation import publish
from shipyard.monitoring.serving.base import ServingMonitorConfig
from shipyard.registry import VersionInfo
from shipyard.store.alerting import AlertRecord
from shipyard.store.serving import ServingWindow

ROWS_PER_REQUEST = 30
TOLERANCE = 0.2
"""The stated tolerance: estimate and realised loss within 20 % of the realised (as the
monitor's ``loss_tolerance``)."""


def only(*names: str, home: Path) -> AlertingConfig:
    return build_config(
        {"defaults": {r.name: False for r in default_rules() if r.name not in names}}, home=home
    )


def firing(served: Running, rule: str) -> list[dict[str, Any]]:
    with served.ws.store.session() as s:
        rows = s.scalars(select(AlertRecord).where(AlertRecord.rule == f"{rule}/ticket"))
        return [dict(r.labels) for r in rows if r.state == "firing"]


def serve_model(served: Running, name: str, model: Any, reference: pd.DataFrame) -> None:
    """Register ``model`` live, its reference rows published (with the label) by a data
    pipeline and named by the version's tags, and wait until the server answers for it."""
    ws = served.ws
    publish(ws.store, ws.artifacts, ws.clock, resolve_monitors("data"), "prep", name, reference,
            role="reference", label="y")  # fmt: skip
    features = reference.drop(columns="y")
    served.registry.register(
        name, model, training_data=features, alias="champion",
        tags={"reference_pipeline": "prep", "reference_dataset": name},
    )  # fmt: skip
    deadline = time.monotonic() + 10
    with served.client() as c:
        while c.get(f"/v2/models/{name}/ready").status_code != 200:
            assert time.monotonic() < deadline, "the server never served the model"
            time.sleep(0.05)


def send(served: Running, name: str, x: np.ndarray, prefix: str) -> tuple[list[str], list[float]]:
    """``x`` in requests of ROWS_PER_REQUEST rows, waiting until every one is flushed: the
    request ids and the answers."""
    with served.ws.store.session() as s:
        before = s.scalar(select(func.coalesce(func.sum(ServingWindow.requests), 0))) or 0
    ids, answers = [], []
    with served.client() as c:
        for i in range(0, len(x), ROWS_PER_REQUEST):
            rid = f"{prefix}{i}"
            r = c.post(f"/models/{name}/invocations",
                       json={"instances": x[i : i + ROWS_PER_REQUEST].tolist()},
                       headers={"x-request-id": rid})  # fmt: skip
            assert r.status_code == 200, r.text
            ids.append(rid)
            answers += r.json()["predictions"]
    deadline = time.monotonic() + 15
    while True:
        with served.ws.store.session() as s:
            done = s.scalar(select(func.coalesce(func.sum(ServingWindow.requests), 0))) or 0
        if done >= before + len(ids):
            return ids, answers
        assert time.monotonic() < deadline, "windows were not flushed"
        time.sleep(0.05)


def monitor_since(served: Running, start: float, until: float | None = None) -> ServingMonitor:
    """The monitor, stopped at ``until`` (the real clock's now), whose recent period starts at
    ``start``."""
    now = time.time() if until is None else until
    config = ServingMonitorConfig(period_s=now - start)
    return ServingMonitor(served.ws.store, served.registry, FakeClock(now), config)


def post_labels(served: Running, ids: list[str], labels: np.ndarray) -> None:
    """Late labels, one list per request of ROWS_PER_REQUEST rows."""
    per_request = [
        labels[i : i + ROWS_PER_REQUEST].tolist() for i in range(0, len(labels), ROWS_PER_REQUEST)
    ]
    with served.client() as c:
        r = c.post(
            "/v2/models/price/feedback",
            headers=bearer(served.ws, "olga", "operator"),
            json={"request_ids": ids, "labels": per_request},
        )
        assert r.json() == {"accepted": len(ids)}


def judge(served: Running, start: float, check: str, info: VersionInfo) -> Check:
    """One serving check of the monitor whose period starts at ``start``, recorded as the
    monitor records every check (a finding and its metric points)."""
    monitor = monitor_since(served, start)
    found = (
        monitor.estimated_loss(info)
        if check == "estimated_loss"
        else monitor.multivariate_drift(info)
    )
    assert found is not None
    monitor.record([found])
    return found


def heteroscedastic(rng: np.random.Generator, x0: np.ndarray) -> pd.DataFrame:
    """y = 2·x0 + x1 + noise whose spread grows with |x0|: the model errs more for large x0."""
    x1 = rng.uniform(-3, 3, len(x0))
    noise = rng.normal(0, 0.2 + np.abs(x0))
    return pd.DataFrame({"x0": x0, "x1": x1, "y": 2 * x0 + x1 + noise})


def test_dle_alerts_on_a_shifted_stream_before_labels_and_labels_confirm_it(
    served: Running, tmp_path: Path
) -> None:
    rng = np.random.default_rng(0)
    train = heteroscedastic(rng, rng.uniform(-3, 3, 2000))
    model = LinearRegression().fit(train[["x0", "x1"]], train["y"])
    serve_model(served, "price", model, heteroscedastic(rng, rng.uniform(-3, 3, 2000)))
    info = served.registry.get("price")
    cfg = only("ServingEstimatedLossHigh", home=tmp_path)

    start = time.time()
    usual = heteroscedastic(rng, rng.uniform(-3, 3, 300))
    usual_ids, _ = send(served, "price", usual[["x0", "x1"]].to_numpy(), "u")
    usual_period = (start, time.time())
    loss = judge(served, start, "estimated_loss", info)
    assert loss.status == "ok", loss.summary
    assert 0.8 < loss.evidence["ratio"]["mae"] < 1.2, loss.summary
    evaluate(served.ws.store, cfg, time.time())
    assert firing(served, "ServingEstimatedLossHigh") == []

    time.sleep(0.01)
    start = time.time()
    shifted = heteroscedastic(rng, rng.uniform(2, 3, 300))  # where the model errs most
    ids, answers = send(served, "price", shifted[["x0", "x1"]].to_numpy(), "s")
    loss = judge(served, start, "estimated_loss", info)
    assert loss.status == "alert" and "above 1.2× the reference" in loss.summary
    assert "realised" not in loss.evidence  # no label yet
    evaluate(served.ws.store, cfg, time.time())
    alerts = firing(served, "ServingEstimatedLossHigh")
    assert {a["metric"] for a in alerts} == {"mae", "rmse"}
    assert all(a["model"] == "price" and a["version"] == str(info.version) for a in alerts)

    labels = shifted["y"].to_numpy()
    post_labels(served, ids, labels)
    confirmed = monitor_since(served, start).estimated_loss(info)
    predicted = np.asarray(answers)
    assert np.allclose(predicted, model.predict(shifted[["x0", "x1"]]))
    realised_mae = float(np.mean(np.abs(labels - predicted)))
    realised_rmse = float(np.sqrt(np.mean((labels - predicted) ** 2)))
    assert abs(confirmed.evidence["realised"]["mae"] - realised_mae) < 1e-9
    assert abs(confirmed.evidence["realised"]["rmse"] - realised_rmse) < 1e-9
    estimate = confirmed.evidence["estimate"]
    assert abs(estimate["mae"] - realised_mae) / realised_mae < TOLERANCE
    assert abs(estimate["rmse"] - realised_rmse) / realised_rmse < TOLERANCE
    assert confirmed.status == "alert" and "the labels confirm" in confirmed.summary
    assert "unreliable" not in confirmed.summary

    # the usual period's labels arrive too, but y moved for the same x (concept drift): the
    # estimate, which only sees x, is far from the realised loss and says it is unreliable
    post_labels(served, usual_ids, usual["y"].to_numpy() + 4.0)
    contradicted = monitor_since(served, *usual_period).estimated_loss(info)
    assert contradicted.evidence["relative_gap"]["mae"] > TOLERANCE
    assert contradicted.status == "alert" and "estimate unreliable" in contradicted.summary


def correlated(rng: np.random.Generator, n: int, rho: float) -> np.ndarray:
    """Two standard normal inputs with correlation ``rho`` (every marginal N(0, 1))."""
    x0 = rng.normal(size=n)
    return np.column_stack([x0, rho * x0 + np.sqrt(1 - rho**2) * rng.normal(size=n)])


def test_multivariate_drift_flags_a_rotation_of_served_inputs_not_iid_traffic(
    served: Running, tmp_path: Path
) -> None:
    rng = np.random.default_rng(1)
    ref = correlated(rng, 2000, 0.8)
    reference = pd.DataFrame({"a": ref[:, 0], "b": ref[:, 1], "y": ref.sum(axis=1)})
    model = LinearRegression().fit(reference[["a", "b"]], reference["y"])
    serve_model(served, "pair", model, reference)
    info = served.registry.get("pair")
    cfg = only("ServingMultivariateDrift", home=tmp_path)

    start = time.time()
    send(served, "pair", correlated(rng, 300, 0.8), "i")
    same = judge(served, start, "multivariate_drift", info)
    assert same.status == "ok", same.summary
    assert {r["method"] for r in same.evidence["results"]} == {"reconstruction_error", "mmd_rbf"}
    evaluate(served.ws.store, cfg, time.time())
    assert firing(served, "ServingMultivariateDrift") == []

    time.sleep(0.01)
    start = time.time()
    rotated = correlated(rng, 300, -0.8)  # the same marginals, the opposite dependence
    send(served, "pair", rotated, "r")
    moved = judge(served, start, "multivariate_drift", info)
    assert moved.status == "alert", moved.summary
    assert {r["method"] for r in moved.evidence["results"] if r["drifted"]} == {
        "reconstruction_error", "mmd_rbf",
    }  # fmt: skip
    evaluate(served.ws.store, cfg, time.time())
    assert {a["method"] for a in firing(served, "ServingMultivariateDrift")} == {
        "reconstruction_error", "mmd_rbf",
    }  # fmt: skip
