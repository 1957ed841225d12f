"""Runs judged while they run: a run slower than its history, or one that went silent.

The run monitors of :mod:`shipyard.monitoring.training` judge a run when it ends; a run that
hangs, or runs ten times slower than usual, is invisible until then. The daemon's
``monitors.progress`` task calls :func:`watch_running_runs` for every running run whose
pipeline has the ``run_progress`` monitor on (by default for data, training and validation
pipelines):

- **elapsed ratio** — the time since the run started over the p95 of its pipeline's last
  ``history`` succeeded runs (the training-time monitor's history);
  ``shipyard_run_elapsed_ratio{kind,pipeline,run}``; the default ``RunSlow`` rule on it
  fires above 1 (``factor`` sets where the finding turns to an alert). Fewer than
  ``min_history`` earlier runs: no ratio.
- **stalled** — a running step whose log (the step's own output and the runner's lines about
  it) has not grown for ``stall_s`` seconds, or a runner that stopped heartbeating the run for
  as long (and at least three heartbeat intervals);
  ``shipyard_run_stalled{kind,pipeline,run}`` is 1, else 0; the default ``RunStalled`` rule
  fires on 1. A step whose log is not on this machine (a remote executor) is judged on the
  runner's heartbeat only.

A running *training* run also writes its elapsed ratio to the finished-run series
``shipyard_training_duration_ratio{pipeline}`` (the largest of the pipeline's running runs):
the time it has run so far over the same p95 is a lower bound of the ratio that judges it when
it ends, so the one ``TrainingSlow`` rule fires while it still runs, as soon as it is past the
limit that will judge it (the ``training_time`` factor, 2× by default), and the value its end
writes decides whether the alert resolves (it finished within the limit) or stays (the finished
run was slow).

When the run ends, :func:`progress_ended` (called where the ended run is judged, in the same
transaction) writes 0 to both series of the run, so the alerts resolve; and, for a training run
that did not succeed (which the training-time monitor does not judge), 0 to its pipeline's
duration ratio. Findings are written when a run's verdict changes, not on every tick.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from shipyard.checks import Check
from shipyard.clock import Clock
from shipyard.monitoring.config import MonitorSpec
from shipyard.monitoring.findings import add_checks
from shipyard.monitoring.settings import monitors_of
from shipyard.monitoring.training import history_durations
from shipyard.pipelines.reconcile import RUN_HEARTBEAT_INTERVAL_S
from shipyard.statuses import STEP_ACTIVE, CheckStatus, RunStatus
from shipyard.store import Store
from shipyard.store.tables import Finding, MetricPoint, Run, StepRun, labels_key

MONITOR = "run_progress"
ELAPSED_RATIO = "shipyard_run_elapsed_ratio"
STALLED = "shipyard_run_stalled"
TRAINING_DURATION_RATIO = "shipyard_training_duration_ratio"
TRAINING = "training"
BATCH = 500
"""At most this many running runs watched per tick (oldest first)."""


def _labels(run: Run) -> dict[str, str]:
    return {"kind": run.kind, "pipeline": run.pipeline, "run": run.id}


def _log_mtime(path: str | None) -> float | None:
    if not path:
        return None
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def judge_progress(spec: MonitorSpec, session: Session, run: Run, now: float) -> Check:
    """The verdict on one running run at ``now``."""
    factor = float(spec.options["factor"])
    stall_s = float(spec.options["stall_s"])
    started = run.started_at if run.started_at is not None else run.created_at
    elapsed = max(0.0, now - started)
    labels = _labels(run)
    evidence: dict[str, Any] = {
        "kind": run.kind,
        "elapsed_s": elapsed,
        "stall_s": stall_s,
        "factor": factor,
    }
    metrics = []
    problems = []

    durations = history_durations(session, run, int(spec.options["history"]))
    evidence["history_runs"] = len(durations)
    if len(durations) >= max(int(spec.options["min_history"]), 1):
        p95 = float(np.percentile(np.asarray(durations), 95))
        ratio = elapsed / p95 if p95 > 0 else (1.0 if elapsed == 0 else float("inf"))
        evidence |= {"history_p95_s": p95, "ratio": ratio}
        metrics.append((ELAPSED_RATIO, labels, ratio))
        if ratio > factor:
            problems.append(
                f"running for {elapsed:.0f} s, {ratio:.2f}× the p95 ({p95:.0f} s) of its "
                f"last {len(durations)} runs"
            )

    silent: dict[str, float] = {}
    for step in session.scalars(
        select(StepRun).where(StepRun.run_id == run.id, StepRun.status.in_(STEP_ACTIVE))
    ):
        mtime = _log_mtime(step.log_path)
        if mtime is None:
            continue  # its log is elsewhere: only the runner's heartbeat says anything
        last = max(mtime, step.started_at or started)
        silent[step.step] = max(0.0, now - last)
    beat = run.heartbeat_at if run.heartbeat_at is not None else started
    runner_silent = max(0.0, now - beat)
    evidence |= {"steps_silent_s": silent, "runner_silent_s": runner_silent}
    stalled_steps = sorted(name for name, s in silent.items() if s > stall_s)
    runner_stalled = runner_silent > max(stall_s, 3 * RUN_HEARTBEAT_INTERVAL_S)
    if stalled_steps:
        problems.append(
            f"step(s) {', '.join(stalled_steps)} wrote nothing for "
            f"{max(silent[n] for n in stalled_steps):.0f} s (limit {stall_s:g} s)"
        )
    if runner_stalled:
        problems.append(f"its runner has not heartbeaten for {runner_silent:.0f} s")
    metrics.append((STALLED, labels, float(bool(stalled_steps) or runner_stalled)))
    status = CheckStatus.ALERT if problems else CheckStatus.OK
    summary = (
        f"run {run.id}: " + "; ".join(problems)
        if problems
        else f"run {run.id} running for {elapsed:.0f} s, making progress"
    )
    return Check.of_pipeline(
        MONITOR, run.pipeline, status, summary, None, run.id, evidence, metrics
    )


def _last_status(session: Session, run_id: str) -> str | None:
    return session.scalar(
        select(Finding.status)
        .where(Finding.monitor == MONITOR, Finding.run_id == run_id)
        .order_by(Finding.ts.desc(), Finding.id.desc())
        .limit(1)
    )


def watch_running_runs(store: Store, clock: Clock) -> list[Check]:
    """Judge every running run whose pipeline watches progress; write the metric points of
    each, and a finding where its verdict changed (the daemon's ``monitors.progress`` task)."""
    now = clock.time()
    checks: list[Check] = []
    with store.session(readonly=True) as s:
        runs = s.scalars(
            select(Run).where(Run.status == RunStatus.RUNNING).order_by(Run.created_at).limit(BATCH)
        ).all()
        for run in runs:
            monitors = monitors_of(s, run)
            if monitors.enabled(MONITOR):
                checks.append(judge_progress(monitors.get(MONITOR), s, run, now))
    if not checks:
        return checks
    training: dict[str, float] = {}
    for c in checks:
        ratio = c.evidence.get("ratio")
        if c.evidence.get("kind") == TRAINING and ratio is not None:
            pipeline = c.labels["pipeline"]
            training[pipeline] = max(float(ratio), training.get(pipeline, 0.0))
    with store.session(immediate=True) as s:
        changed = [c for c in checks if _last_status(s, c.run_id or "") != c.status]
        for c in checks:
            for name, labels, value in c.metrics:
                s.add(MetricPoint.of(name, labels, now, value))
        for pipeline, ratio in training.items():
            s.add(MetricPoint.of(TRAINING_DURATION_RATIO, {"pipeline": pipeline}, now, ratio))
        add_checks(s, [_without_metrics(c) for c in changed], now)
    return checks


def _without_metrics(check: Check) -> Check:
    """``check`` without its metric points (written separately, on every tick)."""
    return Check(check.monitor, check.status, check.summary, check.labels, check.run_id,
                 check.evidence, ())  # fmt: skip


def progress_ended(session: Session, run: Run) -> Check | None:
    """0 on the run's progress series once it has ended, so that its alerts resolve; ``None``
    when nothing was written for it while it ran."""
    labels = _labels(run)
    written = session.scalar(
        select(MetricPoint.id)
        .where(
            MetricPoint.name.in_((ELAPSED_RATIO, STALLED)),
            MetricPoint.labels_key == labels_key(labels),
        )
        .limit(1)
    )
    if written is None:
        return None
    metrics = [(ELAPSED_RATIO, labels, 0.0), (STALLED, labels, 0.0)]
    if run.kind == TRAINING and run.status != RunStatus.SUCCEEDED:
        # the training-time monitor judges only a run that succeeded: nothing else would
        # replace the ratio written while it ran
        metrics.append((TRAINING_DURATION_RATIO, {"pipeline": run.pipeline}, 0.0))
    return Check.of_pipeline(
        MONITOR,
        run.pipeline,
        CheckStatus.OK,
        f"run {run.id} ended ({run.status})",
        None,
        run.id,
        {"status": run.status},
        metrics,
    )
