"""The serving monitors feed the default alert rules: a real quality drop on late labels fires
ModelQualityDrop; a slow burst fires ServingLatencyHigh and normal traffic afterwards resolves
it; the control loop's pass probes the running server and reports its quota lease."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from monitoring.serving_testkit import wait_flushed
from serving.conftest import Running, bearer, fit_classifier, training_frame
from shipyard.alerting.config import load_config
from shipyard.alerting.cycle import evaluate
from shipyard.clock import FakeClock
from shipyard.monitoring.serving import QUALITY_DROP, ServingMonitor, monitor_live_models
from shipyard.quota import LeaseManager
from shipyard.quota.pools import PoolSpec, apply_pools, resolve
from shipyard.registry import Registry
from shipyard.serving import Telemetry
from shipyard.serving.instances import InstanceKeeper, serving_request
from shipyard.store import Store
from shipyard.store.alerting import AlertRecord
from shipyard.store.tables import MetricPoint
from shipyard.workspace import Workspace

T0 = 1_700_000_000.0


def _firing(store: Store) -> dict[str, list[dict[str, str]]]:
    with store.session() as s:
        out: dict[str, list[dict[str, str]]] = {}
        for a in s.scalars(select(AlertRecord).where(AlertRecord.state == "firing")):
            out.setdefault(a.labels["alertname"], []).append(a.labels)
        return out


def _wait_ready(url: str, model: str) -> None:
    deadline = time.monotonic() + 10
    while httpx.get(f"{url}/v2/models/{model}/ready", timeout=2).status_code != 200:
        assert time.monotonic() < deadline, f"{model} did not go live"
        time.sleep(0.05)


def test_a_quality_drop_measured_on_late_labels_fires_model_quality_drop(
    served: Running,
) -> None:
    clf, train = fit_classifier()
    served.registry.register(
        "churn", clf, training_data=train, alias="champion", metrics={"accuracy": 0.97}
    )
    _wait_ready(served.url, "churn")
    served.app.proba_sample_rate = 1.0  # probabilities for every request: CBPE's input
    x, _ = training_frame(seed=11, n=100)
    rows = x.to_numpy()
    with served.client() as c:
        ids = []
        for i, row in enumerate(rows):
            r = c.post("/models/churn/invocations", json={"instances": [row.tolist()]},
                       headers={"x-request-id": f"q{i}"})  # fmt: skip
            assert r.status_code == 200
            ids.append(f"q{i}")
        truth = clf.predict(rows)
        truth[:25] = 1 - truth[:25]  # the world changed for a quarter of the customers
        r = c.post(
            "/v2/models/churn/feedback",
            json={"request_ids": ids, "labels": truth.tolist()},
            headers=bearer(served.ws, "olga", "operator", "model:churn"),
        )
        assert r.json() == {"accepted": 100}
    wait_flushed(served, 100)
    checks = {c.monitor: c for c in ServingMonitor(served.ws.store, served.registry).run("churn")}
    assert checks["serving.quality"].evidence["metrics"]["accuracy"] == pytest.approx(0.75)
    with served.ws.store.session() as s:
        drops = {
            p.labels["source"]: p.value
            for p in s.scalars(select(MetricPoint).where(MetricPoint.name == QUALITY_DROP))
            if p.labels["metric"] == "accuracy"
        }
    assert drops["labels"] == pytest.approx(0.97 - 0.75)
    assert "estimated" in drops  # CBPE's estimate against the same registered accuracy
    evaluate(served.ws.store, load_config(served.ws.settings.home), time.time())
    fired = _firing(served.ws.store)["ModelQualityDrop"]
    assert {"model": "churn", "version": "1", "metric": "accuracy", "source": "labels"} in [
        {k: v for k, v in labels.items() if k in ("model", "version", "metric", "source")}
        for labels in fired
    ]


@pytest.fixture
def ws(migrated_db_url: str, tmp_path: Path) -> Iterator[Workspace]:
    workspace = Workspace.open(home=tmp_path / "home", db_url=migrated_db_url)
    yield workspace
    workspace.store.dispose()


def test_latency_alert_fired_by_a_slow_burst_resolves_once_the_burst_leaves_the_period(
    ws: Workspace,
) -> None:
    """Every 30 s: 20 requests, flushed, the latency check run, the rules evaluated. Eight
    minutes at 800 ms, then 4 ms: p99 is over the recent ``period_s`` (300 s), so the alert
    resolves once the slow windows are older than that."""
    clock = FakeClock(T0)
    clf, train = fit_classifier()
    info = Registry.of(ws).register("churn", clf, training_data=train, alias="champion")
    telemetry = Telemetry(ws.store, None, sample_rate=0.0, clock=clock)
    monitor = ServingMonitor(ws.store, Registry.of(ws), clock)
    cfg = load_config(ws.settings.home)
    x = train.to_numpy()[:1]
    firing: dict[float, bool] = {}
    p99: dict[float, float] = {}
    for step in range(40):  # 20 minutes
        slow = step < 16
        for i in range(20):
            telemetry.ok(info, x, clf.predict(x), None, 0.8 if slow else 0.004, f"r{step}-{i}")
        clock.advance(30)
        telemetry.flush()
        check = monitor.latency(info)
        monitor.record([check])
        evaluate(ws.store, cfg, clock.time())
        minute = (clock.time() - T0) / 60
        p99[minute] = check.evidence["quantiles_s"]["0.99"]
        firing[minute] = "ServingLatencyHigh" in _firing(ws.store)
    assert not firing[5.0] and firing[5.5]  # `for: 5m` after the first slow p99 at 0.5 min
    assert firing[12.5] and p99[12.5] > 0.5  # the last slow window (ended at 8 min) is recent
    # at 13 min it ends on the boundary of the period (8, 13]: no longer recent, resolved
    assert p99[13.0] < 0.01 and not firing[13.0]
    assert not any(firing[m] for m in firing if m >= 13.0)


def test_the_control_loop_probes_the_running_server_and_reports_its_lease(
    served: Running,
) -> None:
    store = served.ws.store
    apply_pools(store, [resolve(PoolSpec(name="serving", capacity={"cpu": 4, "memory": "4Gi"}), 1)])
    keeper = InstanceKeeper(
        store,
        url=served.url,
        host="127.0.0.1",
        workers=1,
        ttl_s=30,
        leases=LeaseManager(store, lease_ttl_s=30),
        request=serving_request("127.0.0.1", 0, "serving", 1, cpu=2, memory="1Gi"),
    )
    keeper.start()
    try:
        assert keeper.lease is not None
        LeaseManager(store).heartbeat(keeper.lease, used={"cpu": 1.9, "memory": 256 * 1024**2})
        checks = monitor_live_models(store, served.registry)
    finally:
        keeper.stop()
    assert set(checks) == {"iris", "boom"}
    iris = {c.monitor: c for c in checks["iris"]}
    assert iris["serving.outage"].status == "ok"
    assert iris["serving.outage"].evidence["probes"][0]["url"] == served.url
    quota = iris["serving.quota"]
    assert quota.status == "warning" and "cpu 95%" in quota.summary
    assert sorted((m[1]["resource"], m[2]) for m in quota.metrics) == [
        ("cpu", pytest.approx(0.95)),
        ("memory", pytest.approx(0.25)),
    ]
    with store.session() as s:
        up = s.scalars(
            select(MetricPoint.value).where(MetricPoint.name == "shipyard_serving_probe_up")
        ).all()
    assert up == [1.0, 1.0]
    # once stopped, nothing holds a lease: the quota check has nothing to report
    assert ServingMonitor(store, served.registry).quota("iris").summary.startswith("no running")
