"""Scheduled pipeline runs: the cron slots of every pipeline, acted on once each.

The scheduler remembers the last slot it acted on per pipeline (``schedule_state``); a slot is
committed as ``launching`` before the launch, so a daemon killed in between launches it on
restart, and a pipeline with a run still going is not started twice.

Each slot acted on is a log line with the ``pipeline`` (and the ``run_id`` when one is known:
the run still going that a slot skipped, the run a launcher reports), where a reader of the
daemon's log looks for why a run started or did not.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from croniter import croniter
from sqlalchemy import select

from shipyard.statuses import RunStatus
from shipyard.store.alerting import ScheduleState
from shipyard.store.tables import PipelineRecord, Run

if TYPE_CHECKING:
    from shipyard.daemon.loop import DaemonContext

log = logging.getLogger("shipyard.daemon")

Launcher = Callable[[PipelineRecord], "str | None"]


def subprocess_launcher(log_dir: Path) -> Launcher:
    """Launch ``shipyard run FILE:PIPELINE`` as a detached process; its run id is its own."""

    def launch(pipeline: PipelineRecord) -> str | None:
        log_dir.mkdir(parents=True, exist_ok=True)
        out = (log_dir / f"scheduled-{pipeline.name}.log").open("ab")
        try:
            subprocess.Popen(
                [sys.executable, "-m", "shipyard", "run", f"{pipeline.file}:{pipeline.name}"],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            out.close()
        return None

    return launch


def start_scheduled_runs(ctx: DaemonContext) -> list[str]:
    """Start each pipeline whose cron slot came since the last one acted on.

    After downtime the missed slots start one run, not one per slot. A pipeline with a run
    still going is not started again (the slot is recorded as skipped). The slot is committed
    as ``launching`` before the launch; a daemon killed in between finds no run created since
    that slot and launches it on restart.
    """
    now = ctx.clock.time()
    due: list[PipelineRecord] = []
    with ctx.store.session(immediate=True) as session:
        for pipeline in session.scalars(
            select(PipelineRecord).where(PipelineRecord.schedule.is_not(None))
        ):
            try:
                slot = float(croniter(pipeline.schedule or "", now).get_prev(float))
            except (ValueError, KeyError) as exc:
                log.warning(
                    "pipeline %s: bad schedule %r: %s",
                    pipeline.name,
                    pipeline.schedule,
                    exc,
                    extra={"pipeline": pipeline.name},
                )
                continue
            state = session.get(ScheduleState, pipeline.name)
            if state is None:
                session.add(
                    ScheduleState(pipeline=pipeline.name, last_slot_at=slot, last_outcome="seen")
                )
                continue
            interrupted = state.last_outcome == "launching" and not _run_since(
                session, pipeline.name, state.last_slot_at
            )
            if slot <= state.last_slot_at and not interrupted:
                continue
            state.last_slot_at = max(slot, state.last_slot_at)
            running = session.scalars(
                select(Run.id).where(Run.pipeline == pipeline.name, Run.status == RunStatus.RUNNING)
            ).first()
            if running is not None:
                state.last_outcome = f"skipped: run {running} still going"
                log.info(
                    "pipeline %s: scheduled slot skipped, run %s still going",
                    pipeline.name,
                    running,
                    extra={"pipeline": pipeline.name, "run_id": running},
                )
                continue
            state.last_outcome = "launching"
            due.append(pipeline)
    started = []
    for pipeline in due:
        run_id = None
        fields = {"pipeline": pipeline.name}
        try:
            run_id = ctx.launcher(pipeline)
            outcome = f"launched {run_id}" if run_id else "launched"
            log.info(
                "pipeline %s: scheduled run %s",
                pipeline.name,
                outcome,
                extra={**fields, "run_id": run_id} if run_id else fields,
            )
        except Exception as exc:
            outcome = f"launch failed: {exc}"[:200]
            log.warning("pipeline %s: scheduled run %s", pipeline.name, outcome, extra=fields)
        with ctx.store.session(immediate=True) as session:
            state = session.get(ScheduleState, pipeline.name)
            if state is not None:
                state.last_outcome = outcome
                state.last_run_id = run_id if outcome.startswith("launched") else None
        started.append(pipeline.name)
    return started


def _run_since(session: Any, pipeline: str, since: float) -> bool:
    return (
        session.scalars(
            select(Run.id).where(Run.pipeline == pipeline, Run.created_at >= since)
        ).first()
        is not None
    )
