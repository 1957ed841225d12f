"""TrainingSlow judged while a training run still runs (a fake-clock timeline): it fires as
soon as the running run is past the limit that judges a finished run (the training-time
monitor's factor × its history's p95), before the run ends; the finished run's own ratio then
keeps it (the run was slow) or a run that failed resolves it; RunSlow is the earlier warning
at the p95 itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from monitoring.conftest import only
from shipyard.alerting.config import AlertingConfig
from shipyard.alerting.cycle import evaluate
from shipyard.monitoring.config import resolve_monitors
from shipyard.monitoring.evaluate import judge_run
from shipyard.monitoring.progress import watch_running_runs
from shipyard.monitoring.settings import keep_settings
from shipyard.store.alerting import AlertRecord
from shipyard.store.base import new_id
from shipyard.store.tables import MetricPoint, PipelineRecord, Run
from shipyard.workspace import Workspace

HISTORY_S = [100, 101, 102, 103, 104]
P95 = float(np.percentile(HISTORY_S, 95))
FACTOR = 2.0
"""The training-time monitor's default factor, TrainingSlow's threshold."""


def states(ws: Workspace, rule: str) -> list[str]:
    with ws.store.session() as s:
        rows = s.scalars(select(AlertRecord).where(AlertRecord.rule == f"{rule}/ticket"))
        return sorted(r.state for r in rows)


def add_run(ws: Workspace, started: float, ended: float | None) -> str:
    run_id = new_id()
    with ws.store.session() as s:
        if s.get(PipelineRecord, "train") is None:
            s.add(PipelineRecord(name="train", kind="training", file="x.py", updated_at=started))
            keep_settings(s, "train", resolve_monitors("training"), started)
        s.add(
            Run(
                id=run_id, pipeline="train", kind="training", file="x.py",
                status="running" if ended is None else "succeeded", created_at=started,
                started_at=started, ended_at=ended, heartbeat_at=started,
            )
        )  # fmt: skip
    return run_id


def run_until(ws: Workspace, cfg: AlertingConfig, run_id: str, seconds: int) -> dict[int, list]:
    """Tick every 30 s until the run has run ``seconds``: the runner heartbeats, the daemon
    watches running runs and evaluates the rules; the alert states seen at each elapsed time."""
    clock = ws.clock
    start = clock.time()
    seen = {}
    while clock.time() - start < seconds:
        clock.advance(30)  # type: ignore[attr-defined]
        with ws.store.session() as s:
            s.get(Run, run_id).heartbeat_at = clock.time()  # type: ignore[union-attr]
        watch_running_runs(ws.store, clock)
        evaluate(ws.store, cfg, clock.time())
        seen[round(clock.time() - start)] = states(ws, "TrainingSlow")
    return seen


def end(ws: Workspace, run_id: str, status: str) -> None:
    with ws.store.session() as s:
        row = s.get(Run, run_id)
        assert row is not None
        row.status, row.ended_at = status, ws.clock.time()
    judge_run(ws.store, ws.clock, run_id)
    ws.clock.advance(1)  # type: ignore[attr-defined]


@pytest.fixture
def history(ws: Workspace) -> Workspace:
    for d in HISTORY_S:
        t = ws.clock.time()
        add_run(ws, t, t + d)
        ws.clock.advance(3600)  # type: ignore[attr-defined]
    return ws


def test_training_slow_fires_while_the_run_runs_and_the_finished_ratio_keeps_it(
    history: Workspace, tmp_path: Path
) -> None:
    ws = history
    cfg = only("TrainingSlow", "RunSlow", home=tmp_path)
    running = add_run(ws, ws.clock.time(), None)
    seen = run_until(ws, cfg, running, 240)
    assert seen[180] == []  # 1.73× the p95: RunSlow's business, not yet slow training
    assert states(ws, "RunSlow") == ["firing"]
    assert seen[210] == ["firing"]  # 2.02× the p95, and the run still runs
    with ws.store.session() as s:
        point = s.scalars(
            select(MetricPoint)
            .where(MetricPoint.name == "shipyard_training_duration_ratio")
            .order_by(MetricPoint.ts.desc())
        ).first()
        assert point is not None and point.value == pytest.approx(240 / P95)
    end(ws, running, "succeeded")
    evaluate(ws.store, cfg, ws.clock.time())
    assert states(ws, "TrainingSlow") == ["firing"]  # it ended slow: the verdict stands
    assert states(ws, "RunSlow") == ["resolved"]


def test_training_slow_raised_while_running_resolves_when_the_run_fails(
    history: Workspace, tmp_path: Path
) -> None:
    ws = history
    cfg = only("TrainingSlow", home=tmp_path)
    running = add_run(ws, ws.clock.time(), None)
    assert run_until(ws, cfg, running, 240)[240] == ["firing"]
    end(ws, running, "failed")
    evaluate(ws.store, cfg, ws.clock.time())
    assert states(ws, "TrainingSlow") == ["resolved"]
