"""The serving monitors' distribution checks (monitoring/serving/monitor.py): input skew, data
problems and latency from the windows a real model server flushed, recorded as findings."""

from __future__ import annotations

from serving_testkit import infer, wait_flushed
from sqlalchemy import select

from serving.conftest import Running, training_frame
from shipyard.monitoring import ServingMonitor
from shipyard.store.tables import Finding, MetricPoint


def test_monitors_see_skew_data_problems_latency_and_record_findings(served: Running) -> None:
    x, _ = training_frame(seed=5, n=120)
    rows = x.to_numpy()
    with served.client() as c:
        infer(c, rows, "ok")
        for _ in range(5):
            c.post("/models/iris/invocations", json={"instances": [[1, "x", 3]]})
    wait_flushed(served, 125)
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
        infer(c, drifted, "drift")
    wait_flushed(served, 245)
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
