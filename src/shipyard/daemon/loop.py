"""The loop itself: periodic tasks in lanes, leader-only tasks only while the lease is held.

**Lanes.** Each task belongs to a lane, and each lane is a thread of its own with its own
schedule: ``control`` (rule evaluation, schedules, quota), ``rollouts`` (smoke checks and canary
analysis), ``delivery`` (the outbox), ``probes`` (the serving monitors, which call the model
servers). A receiver or a model server that hangs holds up its own lane only; rule evaluation
and rollouts go on.

**Leadership apart from the work.** A thread renews the lease every ``renew_s`` (a third of
the lease's ``leader_ttl_s`` by default), whatever the lanes are doing; the lanes ask it before
each task, and delivery asks before each send how long the lease surely lasts
(``DaemonContext.send_window``), and ends each attempt within that. A daemon that lost the
lease stops sending before another daemon can take it over.

:meth:`Daemon.tick` runs every due task once in the calling thread (``--once``, and tests on a
fake clock); :meth:`Daemon.run` runs the lanes and the renewal thread until :meth:`Daemon.stop`.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from shipyard.clock import Clock
from shipyard.daemon.leadership import Leadership, record_config
from shipyard.daemon.schedule import Launcher
from shipyard.observability.logs import bound
from shipyard.supervision import SignalWake

if TYPE_CHECKING:
    from shipyard.alerting.config import AlertingConfig
    from shipyard.store import Store
    from shipyard.workspace import Workspace

log = logging.getLogger("shipyard.daemon")

CONTROL = "control"
ROLLOUTS = "rollouts"
DELIVERY = "delivery"
PROBES = "probes"
ALERTING_CONFIG = "alerting"


def _unbounded() -> float:
    return math.inf


@dataclass
class DaemonContext:
    """What a periodic task gets: the workspace, the alerting config, the clock, the launcher,
    and ``send_window()``: how many seconds an outbound call may still take (what is left of
    the leader lease; set by the :class:`Daemon` that runs the task)."""

    workspace: Workspace
    alerting: AlertingConfig
    clock: Clock
    launcher: Launcher
    log_dir: Path
    alerting_text: str | None = None
    """The text of the alerting file the config was loaded from (None: the defaults)."""
    send_window: Callable[[], float] = _unbounded

    @property
    def store(self) -> Store:
        return self.workspace.store


@dataclass(frozen=True)
class PeriodicTask:
    name: str
    interval_s: float
    run: Callable[[DaemonContext], object]
    leader_only: bool = True
    lane: str = CONTROL


@dataclass
class Daemon:
    """Runs the tasks when due, each lane in its own thread; leader-only tasks only while
    holding the lease, which a thread of its own renews.

    The tasks are handed in by the face (``shipyard daemon`` passes
    :func:`shipyard.daemon.tasks.builtin_tasks`): the loop imports no service, so a broken
    import fails where the tasks are built, before the daemon starts."""

    context: DaemonContext
    tick_s: float = 1.0
    leader_ttl_s: float = 15.0
    renew_s: float = 0.0
    """Seconds between renewals (0: a third of ``leader_ttl_s``)."""
    tasks: list[PeriodicTask] = field(kw_only=True)
    intervals_s: dict[str, float] = field(default_factory=dict)
    holder: str = field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    )
    stop_event: threading.Event = field(default_factory=threading.Event)
    leadership: Leadership = field(init=False)
    _last_run: dict[str, float] = field(default_factory=dict)
    _failing: dict[str, str] = field(default_factory=dict)
    _leading: bool = False

    def __post_init__(self) -> None:
        self.renew_s = self.renew_s or self.leader_ttl_s / 3
        if self.renew_s * 2 > self.leader_ttl_s:
            raise ValueError(
                f"the lease ({self.leader_ttl_s:g}s) must outlast two renewals "
                f"({self.renew_s:g}s apart)"
            )
        self.leadership = Leadership(
            self.context.store, self.holder, self.leader_ttl_s, self.context.clock
        )
        self.context.send_window = self.send_window

    @property
    def is_leader(self) -> bool:
        return self.leadership.held

    def send_window(self) -> float:
        """Fencing: how long an outbound call may take (0 while stopping or not leading)."""
        return 0.0 if self.stop_event.is_set() else self.leadership.remaining_s()

    def renew(self) -> bool:
        """Renew (or take) the lease; on taking it, record the configuration this daemon runs."""
        held = self.leadership.renew()
        if held and not self._leading:
            log.info("%s leads", self.holder)
            ctx = self.context
            record_config(
                ctx.store,
                ALERTING_CONFIG,
                self.holder,
                ctx.alerting.source,
                ctx.alerting_text,
                ctx.clock.time(),
            )
        elif self._leading and not held:
            log.info("%s no longer leads", self.holder)
        self._leading = held
        return held

    def tick(self) -> list[str]:
        """Renew leadership, run every task that is due; returns the names of those run."""
        self.renew()
        return self._run_due(self.tasks)

    def _run_due(self, tasks: list[PeriodicTask]) -> list[str]:
        clock = self.context.clock
        ran = []
        for task in tasks:
            if self.stop_event.is_set():
                break
            if task.leader_only and not self.is_leader:
                continue
            interval = self.intervals_s.get(task.name, task.interval_s)
            last = self._last_run.get(task.name)
            if last is not None and clock.monotonic() - last < interval:
                continue
            self._last_run[task.name] = clock.monotonic()
            self._attempt(task)
            ran.append(task.name)
        return ran

    def _attempt(self, task: PeriodicTask) -> None:
        """Run one task; log when it starts failing (or fails differently) and when it recovers,
        not every time."""
        try:
            with bound(task=task.name):  # every line the task logs says which task it was
                task.run(self.context)
        except Exception as exc:  # one failing task must not stop the others
            problem = f"{type(exc).__name__}: {exc}"
            if self._failing.get(task.name) != problem:
                log.exception("task %s failed", task.name, extra={"task": task.name})
            self._failing[task.name] = problem
            return
        if self._failing.pop(task.name, None) is not None:
            log.info("task %s works again", task.name)

    def lanes(self) -> dict[str, list[PeriodicTask]]:
        found: dict[str, list[PeriodicTask]] = {}
        for task in self.tasks:
            found.setdefault(task.lane, []).append(task)
        return found

    def run(self) -> None:
        """Run the lanes and the renewal until :meth:`stop` (or SIGTERM through
        :func:`run_until_signalled`); the lease is given up once every lane has stopped."""
        threads = [threading.Thread(target=self._renewing, name="daemon-lease", daemon=True)]
        threads += [
            threading.Thread(target=self._lane, args=(tasks,), name=f"daemon-{lane}", daemon=True)
            for lane, tasks in self.lanes().items()
        ]
        try:
            self.renew()
            for thread in threads:
                thread.start()
            while not self.stop_event.wait(0.5):
                pass
        finally:
            self.stop_event.set()
            for thread in threads:
                if thread.ident is not None:
                    thread.join(self.leader_ttl_s)
            busy = [t.name for t in threads if t.is_alive()]
            if busy:  # its work may still reach out: the lease runs out instead of passing on
                log.warning("%s still busy at exit; the lease is left to expire", busy)
            else:
                self.leadership.release()

    def _renewing(self) -> None:
        while not self.stop_event.wait(self.renew_s):
            try:
                self.renew()
            except Exception:  # a bug here must not end renewals; the lease then runs out
                log.exception("renewing the leader lease failed")

    def _lane(self, tasks: list[PeriodicTask]) -> None:
        while not self.stop_event.is_set():
            self._run_due(tasks)
            self.stop_event.wait(self.tick_s)

    def stop(self) -> None:
        self.stop_event.set()


def run_until_signalled(daemon: Daemon) -> None:
    """Run in this thread; SIGTERM and SIGINT end the current tasks, then the loop, cleanly."""

    # The handler only writes a byte: Event.set (and logging) take locks, and a handler runs in
    # the main thread wherever it was, possibly inside the stop event's own wait.
    wake = SignalWake()

    def stop_when_woken() -> None:
        wake.wait(None)
        if not daemon.stop_event.is_set():
            log.info("signal received: stopping after the current tasks")
        daemon.stop()

    previous = {s: signal.signal(s, wake.set) for s in (signal.SIGTERM, signal.SIGINT)}
    stopper = threading.Thread(target=stop_when_woken, name="daemon-signals", daemon=True)
    stopper.start()
    try:
        daemon.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        wake.set()  # ends the stopper
        stopper.join(5)
        wake.close()
