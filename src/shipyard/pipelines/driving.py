"""Driving one run: each ready step on a thread of its own through admission, limits, the
executor, retries with exponential backoff and its timeout; the first step that fails for
good cancels the rest; SIGINT or SIGTERM cancel the run. :class:`~.runner.Runner` sets a run
up and hands a :class:`RunDriver` everything it needs in a :class:`RunSetup` (see the runner's
module docstring for the rules); the driver never reaches back into the runner.

While the run goes, the driver heartbeats its run row and reads it back: a run ended from
outside (``shipyard runs cancel``, or reconciled as abandoned) is cancelled here too. Each
attempt's grant is renewed by a :class:`_Renewal` thread; a grant lost or not renewed by its
fencing deadline gets the step killed at once (``lease lost: …``, see
:mod:`shipyard.quota.admission`); a grant being taken back
(:class:`~shipyard.errors.LeasePreempted`) gets SIGTERM, then SIGKILL when its grace runs out,
and the step is retried at once if it has retries left, else it ends ``preempted``. When the
run has ended, the setup's ``on_finished`` listeners are called in order; one that raises is
logged and the rest still run."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shipyard.clock import Clock
from shipyard.errors import LeasePreempted, QuotaError
from shipyard.pipelines import records, reservation
from shipyard.pipelines.dsl import Pipeline
from shipyard.pipelines.executor import (
    HEARTBEAT_INTERVAL_S,
    Admission,
    Enforcer,
    Executor,
    Grant,
    ProcessLimits,
    StepHandle,
    StepOutcome,
    StepRequest,
    StepTask,
)
from shipyard.pipelines.graph import Graph, Node, refs_in
from shipyard.pipelines.logs import append
from shipyard.pipelines.reconcile import RUN_CHECK_INTERVAL_S, RUN_HEARTBEAT_INTERVAL_S
from shipyard.workspace import Workspace

log = logging.getLogger("shipyard.pipelines.runner")


NOT_APPLIED = "not applied"
MEMORY_LABEL = "SHIPYARD_MEMORY_ENFORCEMENT"


def enforcement_record(limits: ProcessLimits, here: bool) -> dict[str, Any]:
    """What acts on an attempt, as its step record says. ``here``: the executor started the
    step's process on this machine (``on_launch`` got its pid), so the CPU affinity it applies
    to itself and the runner's memory watchdog act on it. Otherwise (a Ray worker, placed by
    Ray) the affinity is not applied, and neither is the watchdog until the runner finds the
    worker on this machine (:func:`watched_record`): both say ``not applied``."""
    record = limits.to_json()
    if here:
        return record
    if limits.cpu_affinity:
        record["cpu_affinity"] = NOT_APPLIED
    if limits.watchdog is not None:
        record["watchdog"] = NOT_APPLIED
        record["env"] = {**record["env"], MEMORY_LABEL: NOT_APPLIED}
    return record


def watched_record(record: dict[str, Any], limits: ProcessLimits) -> dict[str, Any]:
    """The record once the runner's watchdog samples the step's process here."""
    env = dict(record["env"])
    if MEMORY_LABEL in limits.env:
        env[MEMORY_LABEL] = limits.env[MEMORY_LABEL]
    return {**record, "watchdog": True, "env": env}


@dataclass
class StepView:
    """What the runner knows of one step right now (for live progress)."""

    name: str
    status: str = "pending"
    attempt: int = 0
    started_monotonic: float | None = None
    ended_monotonic: float | None = None
    reason: str | None = None

    @property
    def elapsed_s(self) -> float | None:
        if self.started_monotonic is None:
            return None
        return (self.ended_monotonic or time.monotonic()) - self.started_monotonic


@dataclass
class RunResult:
    run_id: str
    status: str
    exit_reason: str | None
    steps: dict[str, StepView] = field(default_factory=dict)


RunListener = Callable[[Workspace, str], object]
"""Called with ``(workspace, run_id)`` once a run has ended and been recorded."""


@dataclass(frozen=True)
class RunSetup:
    """What a run is driven with, chosen by the runner (and the face above it)."""

    workspace: Workspace
    executor: Executor
    admission: Admission
    enforcer: Enforcer
    reservation: reservation.ReservedAdmission | None
    pool: str | None
    priority: int
    kill_grace_s: float
    sample_interval_s: float
    tick_s: float
    on_change: Callable[[dict[str, StepView]], None] | None = None
    on_finished: tuple[RunListener, ...] = ()


class _Cancel(Exception):
    pass


class _Fenced(Exception):
    """The attempt's grant was lost before its step could start."""


class _Renewal:
    """Renews one attempt's grant from a thread of its own and keeps the holder's fencing
    deadline (monotonic): ``expires_at − fence_margin_s`` of the last renewal. ``lost`` says
    why the grant is gone; :meth:`fenced` says why the step must stop now, if it must."""

    def __init__(self, admission: Admission, grant: Grant, clock: Clock) -> None:
        self.admission, self.grant, self.clock = admission, grant, clock
        detail = grant.detail
        self.every_s = float(detail.get("renew_every_s") or HEARTBEAT_INTERVAL_S)
        self.margin_s = float(detail.get("fence_margin_s") or 0.0)
        expires_at = detail.get("expires_at")
        self.deadline: float | None = None
        if expires_at is not None:
            self.deadline = self._deadline(time.monotonic(), clock.time(), float(expires_at))
        self.lost: str | None = None
        self.preempted: LeasePreempted | None = None
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="lease-renewal")
        self._thread.start()

    def _deadline(self, mono: float, now: float, expires_at: float) -> float:
        return mono + (expires_at - now) - self.margin_s

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            mono, now = time.monotonic(), self.clock.time()
            try:
                expires_at = self.admission.heartbeat(self.grant)
            except LeasePreempted as exc:  # taken back: stop by exc.stop_by, SIGTERM first
                self.preempted = exc
                return
            except QuotaError as exc:
                self.lost = str(exc)
                return
            except Exception as exc:  # a store outage: the deadline decides
                self.last_error = f"{type(exc).__name__}: {exc}"
                continue
            if expires_at is not None:
                self.deadline = self._deadline(mono, now, expires_at)

    def fenced(self) -> str | None:
        if self.lost is not None:
            return f"lease lost: {self.lost}"
        if self.deadline is not None and time.monotonic() >= self.deadline:
            late = f" (last error: {self.last_error})" if self.last_error else ""
            return (
                f"lease lost: lease {self.grant.lease_id} was not renewed in time and would "
                f"expire in {self.margin_s:g}s; the step was stopped before its capacity could "
                f"be granted again{late}"
            )
        return None

    def stop(self) -> None:
        self._stop.set()


class RunDriver:
    """The state of one run while it goes: which steps are ready, each step's attempts (admission,
    limits, the executor, retries with backoff, the timeout), cancellation, and the records."""

    def __init__(
        self,
        setup: RunSetup,
        file: Path,
        pipeline: Pipeline,
        graph: Graph,
        new: records.NewRun,
    ) -> None:
        self.setup = setup
        self.pool = setup.pool
        self.admission: Admission = setup.admission
        self.enforcer = setup.enforcer
        self.reservation = setup.reservation
        self.ws = setup.workspace
        self.file = file
        self.pipeline = pipeline
        self.graph = graph
        self.new = new
        self.views = {name: StepView(name) for name in graph.nodes}
        self.outputs: dict[str, dict[str, dict[str, Any]]] = {}
        self.cancel = threading.Event()
        self.cancel_reason: str | None = None
        self.failure: str | None = None
        self._last_run_beat = time.monotonic()
        self.done: queue.Queue[tuple[str, str]] = queue.Queue()
        # what each step is expected to take, for a pool's backfill (history, declared timeout)
        self.expected_s = (
            reservation.expected_durations(self.ws.store, pipeline.name, graph)
            if setup.pool is not None
            else {}
        )
        self.lock = threading.Lock()
        self.settings = {
            "database_url": self.ws.settings.database_url,
            "artifact_url": self.ws.settings.artifact_url,
            "cwd": os.getcwd(),
            "env": dict(os.environ),
        }

    def _context(self, node: str) -> dict[str, Any]:
        return {"run_id": self.new.run_id, "pipeline": self.pipeline.name, "step": node}

    def _notify(self) -> None:
        if self.setup.on_change is not None:
            self.setup.on_change(self.views)

    def close(self) -> None:
        if self.reservation is not None:
            with contextlib.suppress(Exception):
                self.reservation.close()

    def _reserve(self) -> None:
        """Take the run's reservation (``--reserve``); when it can never fit, the run fails."""
        if self.reservation is None:
            return
        try:
            grant = self.reservation.open()
        except QuotaError as exc:
            self.failure = f"not admitted: {exc}"
            self.cancel_reason = "cancelled: the run was not admitted"
            self.cancel.set()
            return
        self.admission = self.reservation
        for name in self.graph.nodes:
            append(
                self.new.log_paths[name],
                "info",
                "run reserved its peak demand",
                self._context(name),
                pool=grant.detail.get("pool", self.pool),
                lease_id=grant.lease_id,
                resources=grant.granted,
            )

    def _tell_finished(self) -> None:
        """Call each run-finished listener; a listener that raises never fails the run."""
        for listener in self.setup.on_finished:
            try:
                listener(self.ws, self.new.run_id)
            except Exception:
                log.exception(
                    "run-finished listener %r failed for run %s", listener, self.new.run_id
                )

    def _ended_elsewhere(self, now: float) -> tuple[str, str | None] | None:
        """Heartbeat the run (every :data:`RUN_HEARTBEAT_INTERVAL_S`) or read it back: the
        ``(status, reason)`` of a run ended from outside, else ``None``."""
        try:
            if now - self._last_run_beat >= RUN_HEARTBEAT_INTERVAL_S:
                self._last_run_beat = now
                return records.heartbeat_run(self.ws.store, self.new.run_id, self.ws.clock.time())
            status = records.run_status(self.ws.store, self.new.run_id)
        except Exception:  # a store outage must not end the run; the next check retries
            log.exception("run %s: liveness check failed", self.new.run_id)
            return None
        return None if status == "running" else (str(status), None)

    def _watch_run(self, stop: threading.Event) -> None:
        """From a thread of its own (the main thread may wait long, e.g. for a reservation):
        every :data:`RUN_CHECK_INTERVAL_S`, heartbeat or read back the run; cancel the run when
        it was ended from outside."""
        while not stop.wait(RUN_CHECK_INTERVAL_S):
            ended = self._ended_elsewhere(time.monotonic())
            if ended is not None:
                if not self.cancel.is_set():
                    self.cancel_reason = f"cancelled: the run was ended from outside ({ended[0]})"
                    self.cancel.set()
                return

    def go(self) -> RunResult:
        handlers = self._install_signal_handlers()
        started: set[str] = set()
        running = 0
        interrupted = False
        self._last_run_beat = time.monotonic()
        stop_watch = threading.Event()
        watch = threading.Thread(target=self._watch_run, args=(stop_watch,), daemon=True)
        watch.start()
        try:
            try:
                self._reserve()
            except (KeyboardInterrupt, _Cancel):
                interrupted = True
                self.cancel_reason = "cancelled by the user"
                self.cancel.set()
            while True:
                try:
                    if not self.cancel.is_set():
                        for name, node in self.graph.nodes.items():
                            if name not in started and all(
                                self.views[u].status == "succeeded" for u in node.upstream
                            ):
                                started.add(name)
                                running += 1
                                threading.Thread(
                                    target=self._drive, args=(node,), daemon=True
                                ).start()
                    if running == 0:
                        break
                    self._notify()
                    try:
                        name, status = self.done.get(timeout=self.setup.tick_s)
                    except queue.Empty:
                        continue
                    running -= 1
                    if status in ("failed", "preempted") and not self.cancel.is_set():
                        self.failure = f"step {name!r} {status}: {self.views[name].reason}"
                        self.cancel_reason = f"cancelled: step {name!r} failed"
                        self.cancel.set()
                except (KeyboardInterrupt, _Cancel):
                    interrupted = True
                    self.cancel_reason = "cancelled by the user"
                    self.cancel.set()
                    signal.signal(signal.SIGINT, signal.SIG_IGN) if handlers else None
        finally:
            self._restore_signal_handlers(handlers)
            stop_watch.set()
            watch.join()
        if self.failure:
            status, reason = "failed", self.failure
        elif interrupted:
            status, reason = "cancelled", "cancelled by the user (SIGINT/SIGTERM)"
        else:
            status, reason = "succeeded", None
        if self.reservation is not None:
            self.reservation.close()
        status, reason = records.finish_run(
            self.ws.store, self.new.run_id, status, reason, self.ws.clock.time()
        )
        self._tell_finished()
        for view in self.views.values():
            if view.status in ("pending", "running", "retrying"):
                view.status = "cancelled"
        self._notify()
        return RunResult(self.new.run_id, status, reason, self.views)

    def _install_signal_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def on_term(signum: int, frame: Any) -> None:
            raise _Cancel()

        old: dict[int, Any] = {signal.SIGINT: signal.getsignal(signal.SIGINT)}
        old[signal.SIGTERM] = signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        return old

    def _restore_signal_handlers(self, handlers: dict[int, Any]) -> None:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)

    # -- one step --------------------------------------------------------------------------
    def _set(self, node: str, **fields: Any) -> None:
        records.update_step(self.ws.store, self.new.step_run_ids[node], **fields)

    def _finish(self, node: str, status: str, reason: str | None) -> None:
        view = self.views[node]
        view.status = status
        view.reason = reason
        view.ended_monotonic = time.monotonic()
        self.done.put((node, status))

    def _drive(self, node: Node) -> None:
        name = node.name
        try:
            status, reason = self._attempts(node)
        except Exception as exc:  # a bug or a store outage must not hang the run
            status, reason = "failed", f"runner error: {type(exc).__name__}: {exc}"
            with contextlib.suppress(Exception):
                self._set(name, status=status, exit_reason=reason, ended_at=self.ws.clock.time())
        self._finish(name, status, reason)

    def _attempts(self, node: Node) -> tuple[str, str | None]:
        name, step = node.name, node.step
        log_path = self.new.log_paths[name]
        ctx = self._context(name)
        queued_since: float | None = None  # a preempted attempt's retry keeps its place
        for attempt in range(1, step.retries + 2):
            if self.cancel.is_set():
                return self._cancelled(name)
            request = StepRequest(
                pipeline=self.pipeline.name,
                run_id=self.new.run_id,
                step=name,
                step_run_id=self.new.step_run_ids[name],
                resources=step.resources.amounts(),
                pool=self.pool,
                priority=self.setup.priority,
                attempt=attempt,
                expected_s=self.expected_s.get(name),
                queued_since=queued_since,
            )
            try:
                grant = self.admission.acquire(request)
            except QuotaError as exc:
                self._set(
                    name, status="failed", exit_reason=str(exc), ended_at=self.ws.clock.time()
                )
                append(log_path, "error", "not admitted", ctx, reason=str(exc))
                return "failed", str(exc)
            try:
                if self.cancel.is_set():
                    return self._cancelled(name)
                outcome, ending = self._attempt(node, attempt, request, grant)
            finally:
                self.admission.release(grant)
            usage = {
                "exit_code": outcome.exit_code,
                "peak_rss_bytes": outcome.peak_rss_bytes,
                "cpu_seconds": outcome.cpu_seconds,
                "ended_at": self.ws.clock.time(),
            }
            if outcome.ok:
                inputs = [
                    {"digest": self.outputs[ref.node][ref.output]["digest"], "name": key}
                    for key, ref in {
                        f"{r.node}:{r.output}": r for r in refs_in(node.arguments)
                    }.items()
                ]
                records.record_success(
                    self.ws.store,
                    self.ws.clock,
                    self.new.step_run_ids[name],
                    outcome.outputs,
                    inputs + outcome.consumed,
                    exit_reason=None,
                    input_rows=outcome.input_rows,
                    input_bytes=outcome.input_bytes,
                    **usage,
                )
                self.outputs[name] = outcome.outputs
                append(log_path, "info", "step succeeded", ctx, attempt=attempt)
                return "succeeded", None
            if ending == "cancelled":
                reason = self.cancel_reason or "cancelled"
                self._set(name, status="cancelled", exit_reason=reason, **usage)
                append(log_path, "warning", "step cancelled", ctx, attempt=attempt)
                return "cancelled", reason
            if ending == "preempted":
                append(log_path, "warning", "attempt preempted", ctx, attempt=attempt)
                if attempt <= step.retries:  # back into the queue at once, in its place
                    queued_since = grant.detail.get("requested_at")
                    self.views[name].status = "retrying"
                    self._set(name, status="retrying", exit_reason=outcome.reason, **usage)
                    append(log_path, "info", "retrying", ctx, backoff_s=0)
                    continue
                self._set(name, status="preempted", exit_reason=outcome.reason, **usage)
                return "preempted", outcome.reason
            append(log_path, "error", "attempt failed", ctx, attempt=attempt, reason=outcome.reason)
            if attempt <= step.retries:
                backoff_s = step.retry_backoff_s * 2 ** (attempt - 1)
                self.views[name].status = "retrying"
                self._set(name, status="retrying", exit_reason=outcome.reason, **usage)
                append(log_path, "info", "retrying", ctx, backoff_s=backoff_s)
                if self.cancel.wait(backoff_s):
                    return self._cancelled(name)
                continue
            self._set(name, status="failed", exit_reason=outcome.reason, **usage)
            return "failed", outcome.reason
        raise AssertionError("unreachable")

    def _cancelled(self, name: str) -> tuple[str, str | None]:
        reason = self.cancel_reason or "cancelled"
        self._set(name, status="cancelled", exit_reason=reason)
        return "cancelled", reason

    def _task(self, node: Node, attempt: int) -> StepTask:
        inputs: dict[str, dict[str, Any]] = {}
        for ref in refs_in(node.arguments):
            inputs[f"{ref.node}:{ref.output}"] = self.outputs[ref.node][ref.output]
        run_dir = Path(self.new.log_paths[node.name]).parent
        return StepTask(
            file=str(self.file),
            pipeline=self.pipeline.name,
            kind=self.pipeline.kind.value,
            run_id=self.new.run_id,
            node=node.name,
            step_function=node.step.name,
            step_run_id=self.new.step_run_ids[node.name],
            attempt=attempt,
            arguments=node.arguments,
            inputs=inputs,
            outputs=node.step.outputs,
            settings=self.settings,
            log_path=self.new.log_paths[node.name],
            result_path=str(run_dir / f".{node.name}.{attempt}.result.json"),
            resources=node.step.resources.amounts(),
        )

    def _attempt(
        self, node: Node, attempt: int, request: StepRequest, grant: Any
    ) -> tuple[StepOutcome, str]:
        """Start one attempt and watch it; ``(outcome, ending)``: ending is ``""``, or
        ``cancelled`` or ``preempted`` when the attempt was stopped for that."""
        name = node.name
        limits = self.enforcer.prepare(request, grant)
        task = self._task(node, attempt)
        view = self.views[name]
        record: dict[str, Any] = {}

        def on_launch(pid: int | None) -> None:
            # A grant lost while the process was being made is not used: no step starts on it.
            if (lost := renewal.fenced()) is not None:
                raise _Fenced(lost)
            # Written before the step's code gets its task: a crash of the runner leaves
            # "running", never a step that runs unrecorded.
            record.update(enforcement_record(limits, pid is not None), lease_id=grant.lease_id)
            self._set(
                name,
                status="running",
                attempt=attempt,
                pid=pid,
                process_started_at=records.process_started_at(pid),
                started_at=self.ws.clock.time(),
                ended_at=None,
                enforcement=record,
            )
            view.status, view.attempt = "running", attempt
            if view.started_monotonic is None:
                view.started_monotonic = time.monotonic()
            append(task.log_path, "info", "attempt started", self._context(name), attempt=attempt)

        renewal = _Renewal(self.admission, grant, self.ws.clock)
        try:
            try:
                handle = self.setup.executor.start(task, limits, on_launch)
            except _Fenced as exc:
                append(task.log_path, "error", "lease lost: step not started", self._context(name))
                return StepOutcome(False, str(exc), None), ""
            return self._watch(handle, node, renewal, limits, record)
        finally:
            renewal.stop()

    def _watch(
        self,
        handle: StepHandle,
        node: Node,
        renewal: _Renewal,
        limits: ProcessLimits,
        record: dict[str, Any],
    ) -> tuple[StepOutcome, str]:
        timeout_s = node.step.timeout_s
        begun = time.monotonic()
        interval = 0.002
        while True:
            outcome = handle.wait(interval)
            if outcome is not None:
                return outcome, ""
            interval = min(interval * 2, self.setup.sample_interval_s)
            preempted = renewal.preempted
            if preempted is not None:  # SIGTERM now, SIGKILL when the grace runs out
                grace_s = max(0.0, preempted.stop_by - self.ws.clock.time())
                handle.kill(grace_s)
                ended = handle.wait(0) or StepOutcome(False, str(preempted), None)
                append(
                    self.new.log_paths[node.name],
                    "warning",
                    "preempted: step stopped",
                    self._context(node.name),
                    reason=str(preempted),
                    grace_s=grace_s,
                )
                return StepOutcome(
                    False,
                    str(preempted),
                    ended.exit_code,
                    {},
                    ended.peak_rss_bytes,
                    ended.cpu_seconds,
                ), "preempted"
            # fencing first: a step whose lease is lost must stop now, with no grace
            fenced = renewal.fenced()
            if fenced is not None:
                handle.kill(0.0)
                ended = handle.wait(0) or StepOutcome(False, fenced, None)
                append(
                    self.new.log_paths[node.name],
                    "error",
                    "lease lost: step stopped",
                    self._context(node.name),
                    reason=fenced,
                )
                return StepOutcome(
                    False, fenced, ended.exit_code, {}, ended.peak_rss_bytes, ended.cpu_seconds
                ), ""
            sample = handle.sample()
            now = time.monotonic()
            reason: str | None = None
            if limits.watchdog is not None and sample is not None:
                if record.get("watchdog") == NOT_APPLIED:  # found here: the watchdog acts now
                    record.update(watched_record(record, limits))
                    self._set(node.name, enforcement=dict(record))
                reason = limits.watchdog(sample)
            if reason is None and timeout_s is not None and now - begun > timeout_s:
                reason = f"timed out after {timeout_s:g}s"
            if reason is not None:
                handle.kill(self.setup.kill_grace_s)
                ended = handle.wait(0) or StepOutcome(False, reason, None)
                return StepOutcome(
                    False, reason, ended.exit_code, {}, ended.peak_rss_bytes, ended.cpu_seconds
                ), ""
            if self.cancel.is_set():
                handle.kill(self.setup.kill_grace_s)
                ended = handle.wait(0) or StepOutcome(False, "cancelled", None)
                return StepOutcome(
                    False, "cancelled", ended.exit_code, {}, ended.peak_rss_bytes, ended.cpu_seconds
                ), "cancelled"
