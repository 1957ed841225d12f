"""The default rules on the series the monitors write: drift, quota, latency, serving quota,
quality drop and traffic-stopped alerts fire and resolve on a fake-clock timeline; a per-model
absence rule pages when a model's servers stop flushing; a fresh workspace raises nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alerting_testkit import write_point
from sqlalchemy import select

from shipyard.alerting.config import AlertingConfig, build_config, load_config
from shipyard.alerting.cycle import evaluate
from shipyard.alerting.defaults import default_rules
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


def _timeline(
    store: Store, cfg: AlertingConfig, points: Callable[[float, int], None], minutes: range
) -> dict[int, set[str]]:
    """Write each minute's points, evaluate; returns the firing alert names at each minute."""
    seen = {}
    for minute in minutes:
        t = T0 + 60 * minute
        points(t, minute)
        evaluate(store, cfg, t)
        seen[minute] = _firing(store)
    return seen


def test_traffic_that_stopped_pages_after_ten_minutes_and_resolves_when_it_returns(
    store: Store, tmp_path: Path
) -> None:
    """The outage check writes ``recent_requests`` every run while traffic is expected."""
    cfg = load_config(tmp_path)
    churn = {"model": "churn"}

    def traffic(t: float, minute: int) -> None:
        stopped = 5 <= minute < 25
        write_point(store, "shipyard_serving_recent_requests", churn, t, 0 if stopped else 40)

    seen = _timeline(store, cfg, traffic, range(40))
    assert "ModelTrafficStopped" not in seen[14]  # pending: zero for 9 minutes
    assert "ModelTrafficStopped" in seen[15]  # zero for 10 minutes
    assert "ModelTrafficStopped" in seen[24]
    assert "ModelTrafficStopped" not in seen[25]  # requests again
    with store.session() as s:
        (alert,) = s.scalars(
            select(AlertRecord).where(
                AlertRecord.labels["alertname"].as_string() == "ModelTrafficStopped"
            )
        )
        assert alert.labels["severity"] == "page" and alert.labels["model"] == "churn"


def test_an_absence_rule_per_model_pages_when_its_servers_stop_flushing(
    store: Store, tmp_path: Path
) -> None:
    """The recipe for a model one expects to hear from: ``absence`` over the counters that every
    server flushes with each window of traffic, matched to that model."""
    cfg = build_config(
        {
            "defaults": {r.name: False for r in default_rules()},
            "rules": [
                {
                    "name": "ChurnSilent",
                    "kind": "absence",
                    "metric": "shipyard_serving_requests_total",
                    "matchers": ['model="churn"'],
                    "lookback": "10m",
                    "severity": "page",
                }
            ],
        },
        home=tmp_path,
    )
    total = 0.0

    def flushes(t: float, minute: int) -> None:
        nonlocal total
        if minute < 5 or minute >= 30:  # the server is down from minute 5 to 30
            total += 100
            labels = {"model": "churn", "version": "3"}
            write_point(store, "shipyard_serving_requests_total", labels, t, total)
        write_point(  # another model's traffic does not hide churn's silence
            store, "shipyard_serving_requests_total", {"model": "iris", "version": "1"}, t, t
        )

    seen = _timeline(store, cfg, flushes, range(40))
    assert "ChurnSilent" not in seen[14]  # last flush at minute 4, lookback 10 minutes
    assert "ChurnSilent" in seen[15]
    assert "ChurnSilent" in seen[29]
    assert "ChurnSilent" not in seen[30]


def test_serving_quota_and_quality_drop_alerts_fire_and_resolve(
    store: Store, tmp_path: Path
) -> None:
    cfg = load_config(tmp_path)
    quota = {"model": "churn", "pool": "serving", "resource": "memory"}
    drop = {"model": "churn", "version": "3", "metric": "accuracy", "source": "labels"}

    def points(t: float, minute: int) -> None:
        busy = minute < 15
        write_point(store, "shipyard_serving_quota_used_fraction", quota, t, 0.95 if busy else 0.5)
        write_point(store, "shipyard_model_quality_drop", drop, t, 0.12 if busy else 0.01)

    seen = _timeline(store, cfg, points, range(25))
    assert seen[0] == {"ModelQualityDrop"}  # no `for`: at once
    assert "ServingQuotaHigh" not in seen[9] and "ServingQuotaHigh" in seen[10]
    assert seen[15] == set()


def test_the_docs_list_every_default_rule_with_its_series_and_severity() -> None:
    doc = Path(__file__).parents[2] / "docs" / "alerting.md"
    section = doc.read_text().split("### Default rules")[1].split("\n\n**")[0]
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("| ") and not line.startswith("| rule")
    ]
    listed = [(row[0], row[1], row[-1]) for row in rows]
    assert listed == [(r.name, r.kind, r.severity) for r in default_rules()]
    for row, rule in zip(rows, default_rules(), strict=True):
        assert f"`{rule.metric}" in row[2] or row[2] == "same", rule.name
