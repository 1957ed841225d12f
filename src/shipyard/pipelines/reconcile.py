"""Runs that end without their runner: a runner that died, and ``shipyard runs cancel``.

A run row says who runs it (host, pid, the process's start time) and carries the runner's
heartbeat (every :data:`RUN_HEARTBEAT_INTERVAL_S`). :func:`reconcile_runs`, called by the
daemon every tick, finds each ``running`` run whose runner is gone — on this host: its process
is gone, a zombie, or a different process under a reused pid; on another host: no heartbeat for
``stale_after_s`` — and ends it: the run is marked ``failed`` with ``runner died: …`` and its
unfinished steps ended *in one transaction first*, then the step processes still alive (their
whole process group, checked by start time against pid reuse) are killed and the run's leases
released, so its pipeline's schedule is free again.

Step processes normally die with their runner already (``PR_SET_PDEATHSIG``, see
:mod:`.child`); the kill here catches what a step started and anything on a kernel without it.

:func:`cancel_run` records the run ``cancelled`` first (with the audit event ``run.cancel``
naming who cancelled it); its runner, which checks its run row
every :data:`RUN_CHECK_INTERVAL_S`, sees that and stops its own steps (no retry starts; their
leases are released); what is still running after ``wait_s`` (or after a runner that died) is
killed here, and the run's leases released.

Leases are quota's: whoever calls these (the daemon, ``shipyard runs cancel``) hands in
``release_leases(run_id, reason) -> lease ids`` (quota's
:func:`~shipyard.quota.admission.release_run_leases`); without it a run's leases are left to
expire and be reclaimed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil
from sqlalchemy import select

from shipyard.audit import record
from shipyard.clock import SYSTEM_CLOCK, Clock
from shipyard.errors import InvalidInput
from shipyard.pipelines.records import resolve_run_id
from shipyard.statuses import RUN_FINAL, STEP_ACTIVE, STEP_FINAL
from shipyard.store.tables import Run, StepRun
from shipyard.workspace import Workspace

RUN_HEARTBEAT_INTERVAL_S = 5.0
RUN_CHECK_INTERVAL_S = 0.5
"""How often a runner reads whether its run was ended from outside (``runs cancel``)."""
RUNNER_STALE_AFTER_S = 60.0
"""A run on another host whose runner has not heartbeated for this long is abandoned."""
_START_TOLERANCE_S = 1.0

ReleaseLeases = Callable[[str, str], list[str]]
"""``release_leases(run_id, reason)``: end every lease the run holds or waits for; their ids."""


@dataclass(frozen=True)
class EndedRun:
    """A run ended by :func:`reconcile_runs` or :func:`cancel_run`."""

    run_id: str
    pipeline: str
    status: str
    reason: str
    steps_stopped: list[str] = field(default_factory=list)
    leases_released: list[str] = field(default_factory=list)


def same_process(pid: int | None, started_at: float | None) -> bool:
    """Whether ``pid`` is still the live (not zombie) process that started at ``started_at``."""
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        created = proc.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return started_at is None or abs(created - started_at) < _START_TOLERANCE_S


def runner_gone(run: Run, now: float, stale_after_s: float = RUNNER_STALE_AFTER_S) -> str | None:
    """Why the runner of a ``running`` run is known to be dead; ``None`` while it may live."""
    where = f"process {run.runner_pid} on {run.runner_host}"
    if run.runner_host == socket.gethostname() and run.runner_pid:
        if same_process(run.runner_pid, run.runner_started_at):
            return None
        return f"runner died: {where} is gone"
    last = run.heartbeat_at or run.started_at or run.created_at
    if now - last > stale_after_s:
        return f"runner died: no heartbeat from {where} for {now - last:.0f}s"
    return None


def kill_step_processes(pid: int | None, started_at: float | None) -> bool:
    """SIGKILL the process group a step leads (the step and what it started), if the step's
    process is still the one recorded, or, once it is gone, the group members it left that
    started after it. True when something was killed."""
    if not pid:
        return False
    if same_process(pid, started_at):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
            return True
        return False
    if started_at is None:
        return False  # the leader is gone and nothing tells its group from a reused one
    killed = False
    for proc in psutil.process_iter(["pid", "create_time"]):
        try:
            if os.getpgid(proc.pid) != pid or proc.info["create_time"] < started_at - 0.01:
                continue
            proc.kill()
            killed = True
        except (ProcessLookupError, psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return killed


def end_run(
    ws: Workspace,
    run_id: str,
    status: str,
    reason: str,
    clock: Clock = SYSTEM_CLOCK,
    release_leases: ReleaseLeases | None = None,
) -> EndedRun | None:
    """End a ``running`` run from outside its runner: the run is recorded first, then its
    unfinished steps (see :func:`_stop_steps`). ``None`` when the run had ended meanwhile."""
    if not _mark_run(ws, run_id, status, reason, clock.time()):
        return None
    return _stop_steps(ws, run_id, status, reason, clock.time(), release_leases)


def _mark_run(
    ws: Workspace, run_id: str, status: str, reason: str, now: float, by: str | None = None
) -> bool:
    """Record the run ended; ``by``: who cancelled it, audited in the same transaction."""
    with ws.store.session(immediate=True) as s:
        run = s.get(Run, run_id)
        if run is None or run.status != "running":
            return False
        run.status, run.exit_reason, run.ended_at = status, reason, now
        if by is not None:
            record(
                s,
                actor=by,
                action="run.cancel",
                subject=("run", run_id),
                details={"pipeline": run.pipeline, "reason": reason},
                now=now,
            )
        return True


def _stop_steps(
    ws: Workspace,
    run_id: str,
    status: str,
    reason: str,
    now: float,
    release_leases: ReleaseLeases | None,
) -> EndedRun:
    """Record the run's unfinished steps as ended (a step that was running gets ``status``,
    one not started ``cancelled``), then kill the step processes still alive on this host and
    release the run's leases."""
    running: list[tuple[str, int | None, float | None]] = []
    with ws.store.session(immediate=True) as s:
        run = s.get(Run, run_id)
        assert run is not None
        pipeline, local = run.pipeline, run.runner_host == socket.gethostname()
        for step in s.scalars(select(StepRun).where(StepRun.run_id == run_id)):
            if step.status in STEP_FINAL:
                continue
            if step.status in STEP_ACTIVE:
                running.append((step.step, step.pid, step.process_started_at))
                step.status, step.exit_reason = status, reason
            else:
                step.status = "cancelled"
                step.exit_reason = step.exit_reason or "cancelled: the run ended first"
            if step.started_at is not None and step.ended_at is None:
                step.ended_at = now
    stopped = [
        name for name, pid, started in running if local and kill_step_processes(pid, started)
    ]
    released = release_leases(run_id, reason) if release_leases is not None else []
    return EndedRun(run_id, pipeline, status, reason, stopped, released)


def reconcile_runs(
    workspace: Workspace,
    clock: Clock = SYSTEM_CLOCK,
    *,
    stale_after_s: float = RUNNER_STALE_AFTER_S,
    release_leases: ReleaseLeases | None = None,
) -> list[EndedRun]:
    """End every ``running`` run whose runner is gone (see the module docstring) as
    ``failed`` with ``runner died: …``; returns the runs ended. The daemon calls this every
    tick; it is safe to call from several processes at once (each run is ended once)."""
    now = clock.time()
    with workspace.store.session() as s:
        runs = list(s.scalars(select(Run).where(Run.status == "running")))
        dead = [(run.id, why) for run in runs if (why := runner_gone(run, now, stale_after_s))]
    ended = []
    for run_id, why in dead:
        result = end_run(workspace, run_id, "failed", why, clock, release_leases)
        if result is not None:
            ended.append(result)
    return ended


def _runner_alive(host: str | None, runner: tuple[int | None, float | None]) -> bool:
    """Whether the run's runner may still be at work: one on another host is given the
    benefit of the doubt; a run that records no runner at all has none to wait for."""
    if host is None:
        return False
    return host != socket.gethostname() or same_process(*runner)


def _steps_running(ws: Workspace, run_id: str) -> bool:
    with ws.store.session() as s:
        found = s.scalars(
            select(StepRun.id).where(StepRun.run_id == run_id, StepRun.status.in_(STEP_ACTIVE))
        ).first()
    return found is not None


def cancel_run(
    workspace: Workspace,
    run: str,
    clock: Clock = SYSTEM_CLOCK,
    *,
    wait_s: float = 15.0,
    release_leases: ReleaseLeases | None = None,
    actor: str | None = None,
) -> EndedRun:
    """Cancel a live run (see the module docstring) as ``actor`` (default: the workspace's),
    who is named in the run's exit reason and in the audit event ``run.cancel``; ``run`` is
    an id or a unique prefix. :class:`~shipyard.errors.NotFound` for an unknown run,
    :class:`InvalidInput` for a run that has already ended."""
    run_id = resolve_run_id(workspace.store, run)
    with workspace.store.session() as s:
        row = s.get(Run, run_id)
        assert row is not None
        state, host = row.status, row.runner_host
        runner = (row.runner_pid, row.runner_started_at)
    if state in RUN_FINAL:
        raise InvalidInput(f"run {run_id} has already ended ({state}); nothing to cancel")
    actor = actor or workspace.actor
    reason = f"cancelled by {actor} (shipyard runs cancel)"
    with workspace.store.session() as s:
        was_running = [
            st.step
            for st in s.scalars(select(StepRun).where(StepRun.run_id == run_id))
            if st.status in STEP_ACTIVE
        ]
    if not _mark_run(workspace, run_id, "cancelled", reason, clock.time(), by=actor):
        raise InvalidInput(f"run {run_id} has already ended; nothing to cancel")
    if _runner_alive(host, runner):
        # the runner sees the run ended at its next check and stops its own steps (no retry
        # starts, their leases are released); what is left after wait_s is stopped here
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and _runner_alive(host, runner):
            if not _steps_running(workspace, run_id):
                break
            time.sleep(0.05)
    ended = _stop_steps(workspace, run_id, "cancelled", reason, clock.time(), release_leases)
    stopped = sorted(set(ended.steps_stopped) | set(was_running))
    return EndedRun(run_id, ended.pipeline, "cancelled", reason, stopped, ended.leases_released)
