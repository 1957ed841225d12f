"""Telemetry windows on both backends: one transaction per window, retries write nothing twice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from serving.conftest import fit_classifier
from shipyard.clock import FakeClock
from shipyard.registry import Registry
from shipyard.serving.telemetry import Telemetry
from shipyard.store.serving import PredictionRecord, ServingWindow
from shipyard.workspace import Workspace


def test_windows_flush_once_even_when_written_twice(migrated_db_url: str, tmp_path: Path) -> None:
    ws = Workspace.open(home=tmp_path / "home", db_url=migrated_db_url)
    try:
        clf, x = fit_classifier()
        info = Registry.of(ws).register("m", clf, training_data=x, alias="champion")
        clock = FakeClock()
        telemetry = Telemetry(ws.store, ws.artifacts, sample_rate=0.5, clock=clock)
        rows = x.to_numpy()[:40]
        for i, row in enumerate(rows):
            telemetry.ok(info, row[None, :], clf.predict(row[None, :]), None, 0.002, f"r{i}")
        telemetry.error(info, "data", 400, 0.001, "bad", "column 'a': not a number")
        clock.advance(5)
        taken = telemetry.swap()
        assert len(taken) == 1
        telemetry._pending = taken + taken  # the same window twice, as after a lost reply
        assert telemetry.flush() == 2
        with ws.store.session() as s:
            windows = s.scalars(select(ServingWindow)).all()
            logged = s.scalar(select(func.count(PredictionRecord.id)))
        assert len(windows) == 1 and logged == 40
        w = windows[0]
        assert (w.requests, w.rows, w.data_errors) == (41, 40, 1)
        assert w.window_end - w.window_start == 5
        assert w.summary["inputs"]["a"]["mean"] == pytest.approx(np.mean(rows[:, 0]))
        assert w.input_profile is not None and w.input_profile["rows"] == 40
    finally:
        ws.store.dispose()


def test_disabled_telemetry_writes_nothing_but_counts_metrics(workspace: Workspace) -> None:
    clf, x = fit_classifier()
    info = Registry.of(workspace).register("m", clf, training_data=x, alias="champion")
    telemetry = Telemetry(workspace.store, workspace.artifacts, enabled=False)
    row = x.to_numpy()[:1]
    telemetry.ok(info, row, clf.predict(row), None, 0.001, "r")
    assert telemetry.flush() == 0
    with workspace.store.session() as s:
        assert s.scalar(select(func.count(ServingWindow.id))) == 0
    value = telemetry.registry.get_sample_value(
        "shipyard_http_requests_total", {"model": "m", "version": "1", "code": "200"}
    )
    assert value == 1.0


def test_a_flushed_window_carries_latencies_finer_than_its_buckets(workspace: Workspace) -> None:
    """The canary judge reads latency at the fine histogram's resolution (2 % bins) from what a
    server flushed, not at its Prometheus buckets (which made every latency effect 0 [0, 0])."""
    from shipyard.deploy.canary import arm_from_store

    clf, x = fit_classifier()
    info = Registry.of(workspace).register("m", clf, training_data=x, alias="champion")
    clock = FakeClock()
    telemetry = Telemetry(workspace.store, workspace.artifacts, clock=clock)
    row = x.to_numpy()[:1]
    served_s = [0.00061, 0.00062, 0.00070, 0.00071]  # all inside one bucket (0.5 ms, 1 ms]
    for i, seconds in enumerate(served_s):
        telemetry.ok(info, row, clf.predict(row), None, seconds, f"r{i}")
    clock.advance(5)
    telemetry.flush()
    arm = arm_from_store(workspace.store, "m", 1, 0.0, clock.time() + 1)
    assert arm.latency_resolution == "fine"
    assert np.sort(arm.latencies_ms) == pytest.approx(np.array(served_s) * 1000, rel=0.03), (
        "each latency within one 2 % bin of what was served"
    )


def test_a_sampled_large_request_keeps_its_first_rows_and_their_answers(
    workspace: Workspace,
) -> None:
    import io
    import json

    import pyarrow.parquet as pq

    from shipyard.serving.telemetry import SAMPLE_MAX_ROWS
    from shipyard.store.tables import ArtifactRecord

    clf, x = fit_classifier()
    info = Registry.of(workspace).register("m", clf, training_data=x, alias="champion")
    telemetry = Telemetry(workspace.store, workspace.artifacts, sample_rate=1.0)
    rows = np.tile(x.to_numpy(), (2, 1))[:500]
    predictions = clf.predict(rows)
    telemetry.ok(info, rows, predictions, None, 0.01, "big")
    assert telemetry.flush() == 1
    with workspace.store.session() as s:
        (record,) = [
            r for r in s.scalars(select(ArtifactRecord))
            if (r.meta or {}).get("kind") == "serving_request_log"
        ]  # fmt: skip
    (logged,) = pq.read_table(io.BytesIO(workspace.artifacts.get_bytes(record.digest))).to_pylist()
    kept = np.asarray(json.loads(logged["request"]))
    assert kept.shape == (SAMPLE_MAX_ROWS, rows.shape[1])
    np.testing.assert_allclose(kept, rows[:SAMPLE_MAX_ROWS])
    assert json.loads(logged["response"]) == predictions[:SAMPLE_MAX_ROWS].tolist()
