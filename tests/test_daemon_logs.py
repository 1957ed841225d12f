"""The daemon's JSON lines about runs name them: a scheduled launch and a skipped slot carry the
``pipeline`` (and the ``run_id`` when known), and a running run whose progress verdict changes
is one line with its ``run_id`` and ``pipeline`` (not one per tick), on a fake-clock timeline."""

from __future__ import annotations

import io
import json
from typing import Any

from shipyard.alerting.config import build_config
from shipyard.clock import FakeClock
from shipyard.daemon import DaemonContext, start_scheduled_runs
from shipyard.daemon.tasks import ProgressWatch
from shipyard.monitoring.config import resolve_monitors
from shipyard.monitoring.settings import keep_settings
from shipyard.observability.logs import bound
from shipyard.store.base import new_id
from shipyard.store.tables import PipelineRecord, Run
from shipyard.workspace import Workspace

T0 = 1_700_000_100.0  # on a 5-minute boundary


def lines(out: io.StringIO, **match: Any) -> list[dict[str, Any]]:
    docs = [json.loads(line) for line in out.getvalue().splitlines()]
    return [d for d in docs if all(d.get(k) == v for k, v in match.items())]


def add_run(ws: Workspace, pipeline: str, kind: str, started: float, ended: float | None) -> str:
    run_id = new_id()
    with ws.store.session() as s:
        if s.get(PipelineRecord, pipeline) is None:
            s.add(
                PipelineRecord(
                    name=pipeline,
                    kind=kind,
                    file="p.py",
                    updated_at=started,
                    schedule="*/5 * * * *" if kind == "data" else None,
                )
            )
            keep_settings(s, pipeline, resolve_monitors(kind), started)
        s.add(
            Run(
                id=run_id,
                pipeline=pipeline,
                kind=kind,
                file="p.py",
                status="running" if ended is None else "succeeded",
                created_at=started,
                started_at=started,
                ended_at=ended,
                heartbeat_at=started,
            )
        )
    return run_id


def test_scheduled_launches_and_skips_name_the_pipeline_and_run(
    workspace: Workspace, json_log: io.StringIO
) -> None:
    clock = FakeClock(T0 + 1)
    cfg = build_config({}, home=workspace.settings.home)
    ctx = DaemonContext(workspace, cfg, clock, lambda p: "run-7", workspace.settings.logs_dir)
    with workspace.store.session() as s:
        s.add(
            PipelineRecord(
                name="nightly", kind="data", file="p.py", schedule="*/5 * * * *", updated_at=T0
            )
        )
    with bound(task="pipelines.schedule"):
        start_scheduled_runs(ctx)  # first sight
        clock.advance(300)
        assert start_scheduled_runs(ctx) == ["nightly"]
    (launched,) = lines(json_log, pipeline="nightly")
    assert (launched["run_id"], launched["task"]) == ("run-7", "pipelines.schedule")
    assert launched["message"] == "pipeline nightly: scheduled run launched run-7"

    going = add_run(workspace, "nightly", "data", clock.time(), None)
    clock.advance(300)
    assert start_scheduled_runs(ctx) == []
    (skipped,) = lines(json_log, run_id=going)
    assert skipped["pipeline"] == "nightly" and "still going" in skipped["message"]


def test_a_run_turning_slow_is_one_line_naming_it(
    workspace: Workspace, json_log: io.StringIO
) -> None:
    """Log fields do not depend on the backend: SQLite only."""
    ws, clock = workspace, FakeClock(T0)
    for i in range(5):  # history: 100 … 104 s
        t = clock.time()
        add_run(ws, "train", "training", t, t + 100 + i)
        clock.advance(3600)
    running = add_run(ws, "train", "training", clock.time(), None)
    cfg = build_config({}, home=ws.settings.home)
    ctx = DaemonContext(ws, cfg, clock, lambda p: None, ws.settings.logs_dir)
    watch = ProgressWatch()
    for _ in range(6):  # past the p95 at 120 s; watched every 30 s
        clock.advance(30)
        with ws.store.session() as s:
            s.get(Run, running).heartbeat_at = clock.time()  # type: ignore[union-attr]
        assert watch(ctx) == {"runs_watched": 1}
    (slow,) = lines(json_log, run_id=running)  # on pace said nothing; slow said it once
    assert (slow["pipeline"], slow["level"]) == ("train", "warning")
    assert "p95" in slow["message"]
