"""Serving monitors: kernels checked against simulation/numpy, then end to end over a socket."""

from __future__ import annotations

import time
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score
from sqlalchemy import func, select

from serving.conftest import Running, fit_classifier, training_frame
from shipyard.clock import FakeClock
from shipyard.monitoring import ServingMonitor
from shipyard.stats import cbpe, expected_calibration_error, histogram_quantile
from shipyard.store.serving import FeedbackRecord, ServingWindow
from shipyard.store.tables import Finding, MetricPoint


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


def _wait_flushed(served: Running, requests: int) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with served.ws.store.session() as s:
            if (s.scalar(select(func.sum(ServingWindow.requests))) or 0) >= requests:
                return
        time.sleep(0.1)
    raise AssertionError("windows were not flushed")


def _infer(c: httpx.Client, rows: np.ndarray[Any, Any], prefix: str) -> list[str]:
    ids = []
    for i, row in enumerate(rows):
        rid = f"{prefix}{i}"
        r = c.post("/models/iris/invocations", json={"instances": [row.tolist()]},
                   headers={"x-request-id": rid})  # fmt: skip
        assert r.status_code == 200
        ids.append(rid)
    return ids


def test_feedback_joins_predictions_and_gives_quality(served: Running) -> None:
    served.app.proba_sample_rate = 1.0
    clf, _ = fit_classifier()
    x, y = training_frame(seed=9, n=80)
    rows = x.to_numpy()
    with served.client() as c:
        ids = _infer(c, rows, "fb")
        flipped = y.copy()
        flipped[:8] = 1 - flipped[:8]  # some labels disagree with the model
        r = c.post(
            "/v2/models/iris/feedback",
            json={"request_ids": ids, "labels": flipped.tolist()},
        )
        assert r.json() == {"accepted": 80}
        bad = c.post("/v2/models/iris/feedback", json={"request_ids": ["a"], "labels": []})
        assert bad.status_code == 400 and "1 request_ids but 0 labels" in bad.json()["error"]
        ghost = c.post("/v2/models/ghost/feedback", json={"request_ids": ["a"], "labels": [1]})
        assert ghost.status_code == 404
    _wait_flushed(served, 80)
    monitor = ServingMonitor(served.ws.store, served.registry)
    info = served.registry.get("iris")
    quality = monitor.quality(info)
    expected = accuracy_score(flipped, clf.predict(rows))
    assert quality.evidence["metrics"]["accuracy"] == pytest.approx(expected)
    assert quality.evidence["metrics"]["f1"] == pytest.approx(f1_score(flipped, clf.predict(rows)))
    assert "auc" in quality.evidence["metrics"]
    assert quality.evidence["rows"] == 80
    estimated = monitor.estimated_quality(info)
    assert estimated.evidence["rows"] == 80
    assert "calibration_error" in estimated.evidence
    with served.ws.store.session() as s:
        assert s.scalar(select(func.count(FeedbackRecord.id))) == 80


def test_monitors_see_skew_data_problems_latency_and_record_findings(served: Running) -> None:
    x, _ = training_frame(seed=5, n=120)
    rows = x.to_numpy()
    with served.client() as c:
        _infer(c, rows, "ok")
        for _ in range(5):
            c.post("/models/iris/invocations", json={"instances": [[1, "x", 3]]})
    _wait_flushed(served, 125)
    monitor = ServingMonitor(served.ws.store, served.registry)
    checks = {ch.monitor: ch for ch in monitor.run("iris", served.url)}
    assert checks["serving.input_skew"].status == "ok", checks["serving.input_skew"].summary
    assert checks["serving.data_type_problems"].evidence["data_errors"] == 5
    assert checks["serving.data_type_problems"].status == "alert"
    assert checks["serving.latency"].evidence["requests"] == 125
    assert checks["serving.outage"].status == "ok"

    drifted = rows.copy()
    drifted[:, 0] += 3.0
    with served.client() as c:
        _infer(c, drifted, "drift")
    _wait_flushed(served, 245)
    skew = monitor.input_skew(served.registry.get("iris"))
    assert skew.status in ("warning", "alert")
    assert "a" in skew.evidence["drifted_columns"] and "b" not in skew.evidence["drifted_columns"]
    # the drift score series is the data monitors': the effect of a drifted column, else 0
    score = {labels["column"]: value for _, labels, value in skew.metrics}
    effect = {c["column"]: c["effect"] for c in skew.evidence["columns"]}
    assert score["a"] == effect["a"] > 0.2 and score["b"] == 0.0
    with served.ws.store.session() as s:
        monitors = set(s.scalars(select(Finding.monitor)))
        names = set(s.scalars(select(MetricPoint.name)))
    assert {"serving.input_skew", "serving.latency", "serving.outage"} <= monitors
    assert {"shipyard_drift_score", "shipyard_serving_request_duration_seconds"} <= names


def test_outage_from_a_failed_probe_and_from_traffic_that_stopped(served: Running) -> None:
    with served.client() as c:
        _infer(c, training_frame(n=3)[0].to_numpy(), "t")
    _wait_flushed(served, 3)
    monitor = ServingMonitor(served.ws.store, served.registry)
    down = monitor.outage("iris", "http://127.0.0.1:9")
    assert down.status == "alert" and "probe failed" in down.summary
    later = FakeClock(time.time() + 2 * monitor.config.period_s)
    quiet = ServingMonitor(served.ws.store, served.registry, clock=later).outage("iris")
    assert quiet.status == "alert" and "no traffic" in quiet.summary
    assert monitor.outage("iris", served.url).status == "ok"
