"""Cumulative serving counters in the store: one growing series per model version across every
worker, read by the default error-budget rules — a burst of 500s on a real server pages."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
from sqlalchemy import select

from serving.conftest import Running, fit_classifier
from shipyard.alerting.config import build_config
from shipyard.alerting.cycle import evaluate
from shipyard.clock import FakeClock
from shipyard.registry import Registry
from shipyard.serving.counters import (
    DATA_ERRORS_TOTAL,
    ERRORS_TOTAL,
    REQUESTS_TOTAL,
    counter_totals,
)
from shipyard.serving.telemetry import Telemetry
from shipyard.store.tables import MetricPoint
from shipyard.workspace import Workspace


def _series(ws: Workspace, name: str) -> list[MetricPoint]:
    with ws.store.session() as s:
        return list(
            s.scalars(
                select(MetricPoint)
                .where(MetricPoint.name == name)
                .order_by(MetricPoint.ts, MetricPoint.id)
            )
        )


def test_workers_flushing_at_once_grow_one_series_per_version(
    migrated_db_url: str, tmp_path: Path
) -> None:
    ws = Workspace.open(home=tmp_path / "home", db_url=migrated_db_url)
    try:
        clf, x = fit_classifier()
        info = Registry.of(ws).register("m", clf, training_data=x, alias="champion")
        workers = [  # each worker's windows end at other times, out of step with the others'
            Telemetry(ws.store, None, sample_rate=0, clock=FakeClock(1e9 + 0.3 * i), worker=f"w{i}")
            for i in range(3)
        ]
        row = x.to_numpy()[:1]
        pred = clf.predict(row)
        sent = {"requests": 0, "errors": 0, "data_errors": 0}

        def work(t: Telemetry, n: int) -> None:
            for flush in range(4):
                for i in range(n):
                    t.ok(info, row, pred, None, 0.001, f"{t.worker}-{flush}-{i}")
                t.error(info, "model", 500, 0.001, f"{t.worker}-{flush}-e", "boom")
                t.error(info, "data", 400, 0.001, f"{t.worker}-{flush}-d", "bad input")
                assert isinstance(t.clock, FakeClock)
                t.clock.advance(1.0)
                assert t.flush() == 1

        threads = [threading.Thread(target=work, args=(t, 5 + i)) for i, t in enumerate(workers)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        for i in range(3):
            sent["requests"] += 4 * (5 + i + 2)
            sent["errors"] += 4
            sent["data_errors"] += 4
        requests, errors = _series(ws, REQUESTS_TOTAL), _series(ws, ERRORS_TOTAL)
        data_errors = _series(ws, DATA_ERRORS_TOTAL)
        for points in (requests, errors, data_errors):
            values = [p.value for p in points]
            assert values[0] == 0.0  # created at zero, so the first window counts
            assert values == sorted(values)  # never a drop, which a rule would read as a reset
            assert len(points) == 1 + 3 * 4
            assert {p.labels_key for p in points} == {"model=m,version=1"}
        assert requests[-1].value == sent["requests"] == 3 * 4 * 7 + 12
        assert errors[-1].value == sent["errors"]  # 5xx only: bad input is the client's error
        assert data_errors[-1].value == sent["data_errors"]
        assert requests[0].labels == errors[0].labels == {"model": "m", "version": "1"}
        with ws.store.session() as s:
            assert counter_totals(s, "m", 1) == (
                sent["requests"],
                sent["errors"],
                sent["data_errors"],
            )
            assert counter_totals(s, "m", 2) == (0.0, 0.0, 0.0)
    finally:
        ws.store.dispose()


def _alerts_after(
    served: Running, ok: int, bad: int, garbled: int = 0
) -> set[tuple[str, str, str]]:
    with served.client() as c:
        for i in range(ok):
            assert c.post("/models/boom/invocations", json={"instances": [[1.0, i, 0]]}).is_success
            c.post("/models/iris/invocations", json={"instances": [[0.5, 0.5, 0.5]]})
        for i in range(bad):
            r = c.post("/models/boom/invocations", json={"instances": [[-1.0, i, 0]]})
            assert r.status_code == 500
        for i in range(garbled):
            r = c.post("/models/boom/invocations", json={"instances": [["oops", i, 0]]})
            assert r.status_code == 400
    deadline = time.monotonic() + 10
    while True:
        with served.ws.store.session() as s:  # a new transaction each time: a fresh snapshot
            if counter_totals(s, "boom", 1)[0] >= ok + bad + garbled:
                break
        assert time.monotonic() < deadline, "the windows were not flushed"
        time.sleep(0.05)
    config = build_config({}, home=served.ws.settings.home)
    result = evaluate(served.ws.store, config, time.time())
    return {(t.rule, t.labels.get("model", ""), t.new) for t in result.transitions}


def test_a_burst_of_server_errors_pages_through_the_error_budget_rule(served: Running) -> None:
    fired = _alerts_after(served, ok=200, bad=40)
    # 40 of 240 requests failed: a burn rate of ~167 against a 99.9 % objective (page: 14.4)
    assert ("ErrorBudgetBurn/page", "boom", "firing") in fired
    assert not any(model == "iris" for _, model, _ in fired)


def test_healthy_traffic_does_not_burn_the_budget(served: Running) -> None:
    fired = _alerts_after(served, ok=200, bad=0)
    assert not any(rule.startswith("ErrorBudgetBurn") for rule, _, _ in fired)
    with httpx.Client(base_url=served.url) as c:
        assert c.get("/ping").status_code == 200


def test_a_share_of_bad_input_opens_a_ticket_but_spends_no_error_budget(served: Running) -> None:
    fired = _alerts_after(served, ok=150, bad=0, garbled=30)
    assert ("ServingBadInput/ticket", "boom", "firing") in fired
    assert not any(rule.startswith("ErrorBudgetBurn") for rule, _, _ in fired)
