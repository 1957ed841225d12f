"""The request log read back as rows (``records.logged_inputs``): files by the half-open
interval of their flush, only the asked version's answered requests, each row with its own
prediction — on both backends, from real flushes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shipyard.clock import FakeClock
from shipyard.registry import Registry, Signature
from shipyard.serving import records
from shipyard.serving.telemetry import Telemetry
from shipyard.workspace import Workspace

T0 = 1_000_000.0


def total(x: np.ndarray) -> np.ndarray:
    return np.asarray(x).sum(axis=1)


def test_logged_rows_pair_with_their_predictions_by_flush_interval(
    migrated_db_url: str, tmp_path: Path
) -> None:
    clock = FakeClock(T0)
    ws = Workspace.open(home=tmp_path / "home", db_url=migrated_db_url, clock=clock)
    try:
        registry = Registry.of(ws)
        signature = Signature.from_json({"inputs": [{"name": "a"}, {"name": "b"}]})
        v1 = registry.register("m", total, flavor="python", signature=signature, alias="champion")
        v2 = registry.register("m", total, flavor="python", signature=signature)
        telemetry = Telemetry(ws.store, ws.artifacts, sample_rate=1.0, clock=clock, worker="w")
        rows = np.arange(40.0).reshape(20, 2)
        sent: dict[int, np.ndarray] = {}
        for window in range(3):  # flushed at T0+10, T0+20, T0+30
            batch = rows[3 * window : 3 * window + 3]
            sent[window] = batch
            telemetry.ok(v1, batch, total(batch), None, 0.001, f"r{window}")
            telemetry.ok(v2, rows[:1], total(rows[:1]), None, 0.001, f"o{window}")
            telemetry.error(v1, "model", 500, 0.001, f"e{window}", "boom")
            clock.advance(10)
            telemetry.flush()
        with ws.store.session() as s:
            got = records.logged_inputs(s, ws.artifacts, "m", v1.version, T0 + 10, T0 + 30)
            capped = records.logged_inputs(s, ws.artifacts, "m", v1.version, T0, max_rows=4)
            other = records.logged_inputs(s, ws.artifacts, "m", v2.version, T0)
        # the windows flushed at T0+20 and T0+30 (not the one at T0+10), newest first
        expected = np.vstack([sent[2], sent[1]])
        assert np.allclose(np.asarray(got.rows), expected)
        assert got.predictions == total(expected).tolist()
        assert (got.requests, got.files) == (2, 2)  # the refused requests are not rows
        assert len(capped.rows) == len(capped.predictions) == 4
        assert np.allclose(np.asarray(other.rows), np.vstack([rows[:1]] * 3))
    finally:
        ws.store.dispose()
