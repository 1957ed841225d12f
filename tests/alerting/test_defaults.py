"""The default rules on the series the monitors write: drift, quota and latency alerts fire and
resolve on a fake-clock timeline, and a fresh workspace with no series raises nothing."""

from __future__ import annotations

from pathlib import Path

from alerting_testkit import write_point
from sqlalchemy import select

from shipyard.alerting.config import load_config
from shipyard.alerting.cycle import evaluate
from shipyard.store import Store
from shipyard.store.alerting import AlertRecord

T0 = 1_700_000_000.0


def _firing(store: Store) -> set[str]:
    with store.session() as s:
        rows = s.scalars(select(AlertRecord).where(AlertRecord.state == "firing"))
        return {r.labels["alertname"] for r in rows}


def test_a_fresh_workspace_raises_nothing(sqlite_store: Store, tmp_path: Path) -> None:
    cfg = load_config(tmp_path)
    for t in range(0, 3600, 300):
        assert evaluate(sqlite_store, cfg, T0 + t).transitions == []


def test_drift_quota_and_latency_alerts_fire_and_resolve(
    sqlite_store: Store, tmp_path: Path
) -> None:
    cfg = load_config(tmp_path)
    model = {"model": "churn", "version": "3"}
    # Ten minutes of trouble: inputs drift, p99 at 800 ms, the GPU pool filling fast.
    for minute in range(11):
        t = T0 + 60 * minute
        write_point(sqlite_store, "shipyard_drift_score", {**model, "column": "age"}, t, 0.35)
        write_point(
            sqlite_store,
            "shipyard_serving_request_duration_seconds",
            {**model, "quantile": "0.99"},
            t,
            0.8,
        )
        write_point(
            sqlite_store,
            "shipyard_quota_used_fraction",
            {"pool": "gpu", "resource": "gpu"},
            t,
            0.5 + 0.01 * minute,
        )
        evaluate(sqlite_store, cfg, t)
    assert _firing(sqlite_store) == {"DataDrift", "ServingLatencyHigh", "QuotaExhaustionSoon"}
    # Recovery.
    resolved: set[str] = set()
    for minute in range(11, 40):
        t = T0 + 60 * minute
        write_point(sqlite_store, "shipyard_drift_score", {**model, "column": "age"}, t, 0.05)
        write_point(
            sqlite_store,
            "shipyard_serving_request_duration_seconds",
            {**model, "quantile": "0.99"},
            t,
            0.1,
        )
        write_point(
            sqlite_store, "shipyard_quota_used_fraction", {"pool": "gpu", "resource": "gpu"}, t, 0.5
        )
        changes = evaluate(sqlite_store, cfg, t).transitions
        resolved |= {c.labels["alertname"] for c in changes if c.new == "resolved"}
    assert _firing(sqlite_store) == set()
    log = tmp_path / "logs" / "alerts.log"
    assert not log.exists()  # evaluation only queues; the outbox holds what the loop will send
    assert resolved == {"DataDrift", "ServingLatencyHigh", "QuotaExhaustionSoon"}
