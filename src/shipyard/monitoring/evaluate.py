"""Judging finished runs: right after each run (:func:`on_run_finished`, a run-finished listener
that ``shipyard run`` hands the runner) and as a catch-up every daemon tick
(:func:`evaluate_monitors`), for runs whose runner died or ran elsewhere.

A run is judged once: the ``monitored_runs`` row is written in the same transaction as the
run's findings and metric points, and a second writer (runner and daemon at the same moment)
fails on its primary key and rolls back. The metric points carry the run's end time, so a run
judged late by the daemon does not look like a failure that happened now.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from shipyard.checks import Check
from shipyard.clock import Clock
from shipyard.monitoring.config import MonitorSet
from shipyard.monitoring.findings import add_checks
from shipyard.monitoring.progress import progress_ended
from shipyard.monitoring.settings import keep_settings, run_settings, stored_settings
from shipyard.monitoring.training import training_failures, training_time
from shipyard.statuses import RUN_FINAL
from shipyard.store import Store
from shipyard.store.monitoring import MonitoredRun
from shipyard.store.tables import Run

if TYPE_CHECKING:
    from shipyard.workspace import Workspace

logger = logging.getLogger(__name__)

LOOKBACK_S = 7 * 86400.0
"""The daemon looks this far back for finished runs nobody judged."""
BATCH = 200
"""At most this many runs judged per daemon tick."""


def judge_run(
    store: Store, clock: Clock, run_id: str, monitors: MonitorSet | None = None
) -> list[Check] | None:
    """Run the run monitors on a finished run and record their verdicts, once.

    ``monitors`` defaults to the pipeline's stored settings (else its kind's defaults).
    ``None`` when the run is unknown, unfinished or already judged.
    """
    try:
        with store.session(immediate=True) as s:
            if s.get(MonitoredRun, run_id) is not None:
                return None
            run = s.get(Run, run_id)
            if run is None or run.status not in RUN_FINAL:
                return None
            monitors = monitors or stored_settings(s, run.pipeline, run.kind)
            checks: list[Check] = []
            if monitors.enabled("training_time"):
                found = training_time(monitors.get("training_time"), s, run)
                checks += [found] if found else []
            if monitors.enabled("training_failures"):
                failed = training_failures(monitors.get("training_failures"), run)
                checks += [failed] if failed else []
            ended = progress_ended(s, run)  # its live alerts (RunSlow, RunStalled) resolve
            checks += [ended] if ended else []
            ts = run.ended_at if run.ended_at is not None else clock.time()
            add_checks(s, checks, ts)
            s.add(MonitoredRun(run_id=run_id, ts=clock.time()))
    except IntegrityError:
        return None  # judged at the same moment by another process
    return checks


def on_run_finished(workspace: Workspace, run_id: str) -> list[Check] | None:
    """Judge a run that just ended: the run-finished listener the face wires into the runner,
    called after ``finish_run``.

    It keeps the monitor settings the run was created with as its pipeline's (the daemon and
    the CLI read those) and runs the run monitors. It never raises: monitoring must not fail a
    run that finished; a problem is logged and the daemon retries later.
    """
    try:
        store = workspace.store
        with store.session(readonly=True) as s:
            run = s.get(Run, run_id)
            if run is None:
                return None
            pipeline, monitors = run.pipeline, run_settings(run)
        if monitors is not None:
            with store.session(immediate=True) as s:
                keep_settings(s, pipeline, monitors, workspace.clock.time())
        return judge_run(store, workspace.clock, run_id, monitors)
    except Exception:  # the run is over: monitoring must not break the runner
        logger.warning("monitoring of run %s failed; the daemon will retry", run_id, exc_info=True)
        return None


def evaluate_monitors(store: Store, clock: Clock) -> dict[str, Any]:
    """Judge finished runs of the last week that nobody judged (the daemon's periodic task)."""
    since = clock.time() - LOOKBACK_S
    with store.session(readonly=True) as s:
        judged = select(MonitoredRun.run_id).where(MonitoredRun.run_id == Run.id).exists()
        pending = list(
            s.scalars(
                select(Run.id)
                .where(Run.status.in_(RUN_FINAL), Run.ended_at >= since, ~judged)
                .order_by(Run.ended_at)
                .limit(BATCH)
            )
        )
    findings = 0
    for run_id in pending:
        checks = judge_run(store, clock, run_id)
        findings += len(checks or [])
    return {"runs_judged": len(pending), "findings": findings}
