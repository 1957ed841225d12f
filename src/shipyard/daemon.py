"""The control loop (``shipyard daemon``): periodic tasks run by one leader at a time.

Tasks are pluggable: a wing registers its own with :func:`periodic_task` (a name, an interval,
a function of the :class:`DaemonContext`), e.g. the deployment wing's rollout advancement::

    @periodic_task("rollouts.advance", interval_s=5)
    def _advance(ctx: DaemonContext) -> None:
        advance_rollouts(ctx.store, ctx.clock)

Built in: ``pipelines.schedule`` (cron), ``monitors.evaluate``, ``monitors.serving`` (the
serving monitors of every live model, probing the running model servers), ``alerts.evaluate``,
``notifications.deliver``, ``rollouts.advance`` (``shipyard.deploy.loop.advance_rollouts``),
``quota.reclaim``; the other wings' functions are imported lazily, when they exist.

**One actor.** Several daemons may run against one database; each tick, a daemon renews (or
takes, once expired) the row ``leader_leases['daemon']`` in a transaction with a row lock, and
only the holder runs leader-only tasks. A daemon that stops cleanly (SIGTERM) gives the lease
up at once; one that is SIGKILLed loses it ``leader_ttl_s`` later.

**Nothing lost.** Every task's decisions are rows committed before they take effect (alert
states with their outbox rows, cron slots before a launch), so a daemon killed at any point
resumes where it was, at worst re-sending a notification (at-least-once).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from types import FrameType
from typing import Any

from croniter import croniter
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from shipyard.alerting.config import AlertingConfig
from shipyard.alerting.cycle import evaluate
from shipyard.alerting.outbox import deliver_due
from shipyard.clock import Clock
from shipyard.store import Store
from shipyard.store.alerting import LeaderLease, ScheduleState
from shipyard.store.tables import PipelineRecord, Run
from shipyard.workspace import Workspace

log = logging.getLogger("shipyard.daemon")

LEADER = "daemon"
ACTIVE_RUN_STATES = ("pending", "queued", "running")
Launcher = Callable[[PipelineRecord], "str | None"]


@dataclass
class DaemonContext:
    """What a periodic task gets: the workspace, the alerting config, the clock."""

    workspace: Workspace
    alerting: AlertingConfig
    clock: Clock
    launcher: Launcher
    log_dir: Path

    @property
    def store(self) -> Store:
        return self.workspace.store


@dataclass(frozen=True)
class PeriodicTask:
    name: str
    interval_s: float
    run: Callable[[DaemonContext], object]
    leader_only: bool = True


_TASKS: dict[str, PeriodicTask] = {}


def periodic_task(
    name: str, interval_s: float, *, leader_only: bool = True
) -> Callable[[Callable[[DaemonContext], object]], Callable[[DaemonContext], object]]:
    """Register a function as a periodic task of every daemon started afterwards."""

    def register(fn: Callable[[DaemonContext], object]) -> Callable[[DaemonContext], object]:
        _TASKS[name] = PeriodicTask(name, interval_s, fn, leader_only)
        return fn

    return register


def registered_tasks() -> list[PeriodicTask]:
    return list(_TASKS.values())


# -- leadership -----------------------------------------------------------------------------


def acquire_leadership(
    store: Store, holder: str, ttl_s: float, now: float, name: str = LEADER
) -> bool:
    """Take or renew the lease ``name`` for ``holder``; False while another holds it."""
    try:
        with store.session(immediate=True) as session:
            row = session.scalars(
                select(LeaderLease).where(LeaderLease.name == name).with_for_update()
            ).first()
            if row is None:
                session.add(LeaderLease(name=name, holder=holder, expires_at=now + ttl_s))
                return True
            if row.holder != holder and row.expires_at > now:
                return False
            row.holder = holder
            row.expires_at = now + ttl_s
            return True
    except IntegrityError:  # another daemon inserted the row first
        return False


def release_leadership(store: Store, holder: str, now: float, name: str = LEADER) -> None:
    with store.session(immediate=True) as session:
        row = session.get(LeaderLease, name, with_for_update=True)
        if row is not None and row.holder == holder:
            row.expires_at = now


# -- scheduled pipeline runs ----------------------------------------------------------------


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
                    "pipeline %s: bad schedule %r: %s", pipeline.name, pipeline.schedule, exc
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
                select(Run.id).where(
                    Run.pipeline == pipeline.name, Run.status.in_(ACTIVE_RUN_STATES)
                )
            ).first()
            if running is not None:
                state.last_outcome = f"skipped: run {running} still going"
                continue
            state.last_outcome = "launching"
            due.append(pipeline)
    started = []
    for pipeline in due:
        try:
            run_id = ctx.launcher(pipeline)
            outcome = f"launched {run_id}" if run_id else "launched"
        except Exception as exc:
            outcome = f"launch failed: {exc}"[:200]
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


# -- the built-in tasks ---------------------------------------------------------------------


def _optional(module: str, attribute: str) -> Callable[..., Any] | None:
    """A function another wing may provide, imported lazily (None while it does not exist)."""
    try:
        found = getattr(import_module(module), attribute, None)
    except ImportError:
        return None
    return found if callable(found) else None


@periodic_task("pipelines.schedule", interval_s=15)
def _schedule(ctx: DaemonContext) -> object:
    return start_scheduled_runs(ctx)


@periodic_task("monitors.evaluate", interval_s=30)
def _monitors(ctx: DaemonContext) -> object:
    fn = _optional("shipyard.monitoring", "evaluate_monitors")
    return fn(ctx.store, ctx.clock) if fn else None


@periodic_task("monitors.serving", interval_s=30)
def _serving_monitors(ctx: DaemonContext) -> object:
    """The serving monitors of every live model, probing the running model servers."""
    from shipyard.monitoring.serving import monitor_live_models
    from shipyard.registry import Registry

    return monitor_live_models(ctx.store, Registry.of(ctx.workspace), ctx.clock)


@periodic_task("alerts.evaluate", interval_s=0)  # every tick
def _alerts(ctx: DaemonContext) -> object:
    return evaluate(ctx.store, ctx.alerting, ctx.clock.time())


@periodic_task("notifications.deliver", interval_s=0)  # every tick
def _deliver(ctx: DaemonContext) -> object:
    return deliver_due(ctx.store, ctx.alerting.receivers, ctx.clock)


@periodic_task("rollouts.advance", interval_s=5)
def _rollouts(ctx: DaemonContext) -> object:
    fn = _optional("shipyard.deploy.loop", "advance_rollouts")
    return fn(ctx.workspace, ctx.clock) if fn else None


@periodic_task("quota.reclaim", interval_s=5)
def _reclaim(ctx: DaemonContext) -> object:
    fn = _optional("shipyard.quota", "reclaim_expired")
    return fn(ctx.store, ctx.clock) if fn else None


@periodic_task("quota.usage", interval_s=5)
def _quota_usage(ctx: DaemonContext) -> object:
    """Reserved vs used, usage rate and time to exhaustion per pool (quota's usage series)."""
    fn = _optional("shipyard.quota.usage", "record_usage")
    return fn(ctx.store, ctx.clock) if fn else None


# -- the loop -------------------------------------------------------------------------------


@dataclass
class Daemon:
    """Runs the registered tasks when due; leader-only tasks only while holding the lease."""

    context: DaemonContext
    tick_s: float = 1.0
    leader_ttl_s: float = 15.0
    tasks: list[PeriodicTask] = field(default_factory=registered_tasks)
    intervals_s: dict[str, float] = field(default_factory=dict)
    holder: str = field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    )
    stop_event: threading.Event = field(default_factory=threading.Event)
    is_leader: bool = False
    _last_run: dict[str, float] = field(default_factory=dict)

    def tick(self) -> list[str]:
        """Renew leadership, run every task that is due; returns the names of those run."""
        clock = self.context.clock
        self.is_leader = acquire_leadership(
            self.context.store, self.holder, self.leader_ttl_s, clock.time()
        )
        ran = []
        for task in self.tasks:
            if task.leader_only and not self.is_leader:
                continue
            interval = self.intervals_s.get(task.name, task.interval_s)
            last = self._last_run.get(task.name)
            if last is not None and clock.monotonic() - last < interval:
                continue
            self._last_run[task.name] = clock.monotonic()
            try:
                task.run(self.context)
            except Exception:  # one failing task must not stop the others
                log.exception("task %s failed", task.name)
            ran.append(task.name)
            if self.stop_event.is_set():
                break
        return ran

    def run(self) -> None:
        """Tick until :meth:`stop` (or SIGTERM through :func:`run_until_signalled`)."""
        try:
            while not self.stop_event.is_set():
                self.tick()
                self.stop_event.wait(self.tick_s)
        finally:
            release_leadership(self.context.store, self.holder, self.context.clock.time())

    def stop(self) -> None:
        self.stop_event.set()


def run_until_signalled(daemon: Daemon) -> None:
    """Run in this thread; SIGTERM and SIGINT end the current task, then the loop, cleanly."""

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping after the current task", signum)
        daemon.stop()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        daemon.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
