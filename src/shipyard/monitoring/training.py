"""The monitors of training pipelines (DESIGN.md's table, "training"): training time against the
pipeline's own history, and training failures. Both judge one finished :class:`Run`.

- **training time**: the run's wall time d (``ended_at − started_at``) against the 95th
  percentile of the durations of the pipeline's last ``history`` succeeded runs before it
  (numpy's default linear interpolation, Hyndman & Fan 1996 definition 7). It writes
  ``shipyard_training_duration_ratio{pipeline}`` = d / p95 and flags the run when the ratio is
  above ``factor``. Fewer than ``min_history`` earlier runs: no verdict, no ratio.
- **training failures**: ``shipyard_run_failed{kind,pipeline}`` = 1 for a failed run, 0 for a
  succeeded one (a cancelled run is a person's decision, not a failure: nothing is written).
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from shipyard.checks import Check
from shipyard.monitoring.config import MonitorSpec
from shipyard.statuses import CheckStatus, RunStatus
from shipyard.store.tables import Run, StepRun


def _duration_s(run: Run) -> float | None:
    if run.started_at is None or run.ended_at is None:
        return None
    return max(0.0, run.ended_at - run.started_at)


def history_durations(session: Session, run: Run, limit: int) -> list[float]:
    """The wall times of the pipeline's last ``limit`` succeeded runs created before ``run``
    (the history that both the finished-run and the running-run monitors judge against)."""
    earlier = session.scalars(
        select(Run)
        .where(
            Run.pipeline == run.pipeline,
            Run.status == RunStatus.SUCCEEDED,
            Run.id != run.id,
            Run.ended_at.is_not(None),
            Run.started_at.is_not(None),
            Run.created_at <= run.created_at,
        )
        .order_by(Run.created_at.desc())
        .limit(limit)
    ).all()
    return [d for d in (_duration_s(r) for r in earlier) if d is not None]


def training_time(spec: MonitorSpec, session: Session, run: Run) -> Check | None:
    """The run's duration against its pipeline's history; ``None`` for a run that did not
    succeed (its duration says nothing about how long training takes)."""
    duration = _duration_s(run)
    if run.status != RunStatus.SUCCEEDED or duration is None:
        return None
    factor = float(spec.options.get("factor", 2.0))
    min_history = int(spec.options.get("min_history", 5))
    durations = history_durations(session, run, int(spec.options.get("history", 30)))
    steps = {
        st.step: st.ended_at - st.started_at
        for st in session.scalars(select(StepRun).where(StepRun.run_id == run.id))
        if st.started_at is not None and st.ended_at is not None
    }
    evidence: dict[str, object] = {
        "duration_s": duration,
        "history_runs": len(durations),
        "factor": factor,
        "step_durations_s": steps,
    }
    if len(durations) < max(min_history, 1):
        return Check.of_pipeline(
            "training_time",
            run.pipeline,
            CheckStatus.OK,
            f"run took {duration:.1f} s; {len(durations)} earlier run(s), "
            f"{min_history} needed to judge",
            run_id=run.id,
            evidence=evidence,
        )
    p95 = float(np.percentile(np.asarray(durations), 95))
    ratio = duration / p95 if p95 > 0 else (1.0 if duration == 0 else float("inf"))
    evidence |= {"history_p95_s": p95, "ratio": ratio}
    metrics = [("shipyard_training_duration_ratio", {"pipeline": run.pipeline}, ratio)]
    if ratio > factor:
        status = CheckStatus.ALERT
        summary = (
            f"run took {duration:.1f} s, {ratio:.2f}× the p95 ({p95:.1f} s) of its last "
            f"{len(durations)} runs (limit {factor:g}×)"
        )
    else:
        status = CheckStatus.OK
        summary = f"run took {duration:.1f} s, {ratio:.2f}× its history's p95 ({p95:.1f} s)"
    return Check.of_pipeline(
        "training_time", run.pipeline, status, summary, None, run.id, evidence, metrics
    )


def training_failures(spec: MonitorSpec, run: Run) -> Check | None:
    """1 for a failed run, 0 for a succeeded one; ``None`` for a cancelled or unfinished run."""
    if run.status not in (RunStatus.SUCCEEDED, RunStatus.FAILED):
        return None
    failed = run.status == RunStatus.FAILED
    metrics = [("shipyard_run_failed", {"kind": run.kind, "pipeline": run.pipeline}, float(failed))]
    summary = f"run {run.id} failed: {run.exit_reason}" if failed else f"run {run.id} succeeded"
    evidence = {"status": run.status, "exit_reason": run.exit_reason}
    return Check.of_pipeline(
        "training_failures",
        run.pipeline,
        CheckStatus.ALERT if failed else CheckStatus.OK,
        summary,
        None,
        run.id,
        evidence,
        metrics,
    )
