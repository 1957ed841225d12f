"""The local executor: every step attempt in its own OS process, started from a warm forkserver.

Why a forkserver: per-step process isolation is required (quota limits and kills a step's
process group), but starting a fresh interpreter per step costs ~1 s once pandas, pyarrow and
scikit-learn are imported. ``multiprocessing``'s forkserver imports them once (see
:data:`PRELOAD`) in a small server process; each step is a ``fork()`` of that server — a new
process with its own pid, process group, memory and limits, ready in milliseconds with the heavy
imports already done. Unlike ``fork`` from the runner itself, the server holds no threads, locks
or database connections, so forking it is safe. A process pool that reuses workers would be
faster still, but would lose the isolation (a step's leaked state, rlimits and affinity would
outlive it) — so each attempt gets a fresh process.
"""

from __future__ import annotations

import atexit
import dataclasses
import multiprocessing
import os
import signal
import threading
import weakref
from collections.abc import Callable
from multiprocessing import forkserver, popen_forkserver, spawn
from multiprocessing.context import ForkServerContext, ForkServerProcess
from typing import Any

import psutil

from shipyard.pipelines.child import idle_main
from shipyard.pipelines.executor import (
    Governor,
    ProcessLimits,
    StepOutcome,
    StepResult,
    StepTask,
    UsageSample,
)
from shipyard.process_tree import sample_tree

PRELOAD = [
    "shipyard.pipelines.child",
    "shipyard.pipelines.loader",
    "shipyard.store",
    "shipyard.artifacts",
    "numpy",
    "pandas",
    "pyarrow.parquet",
    "joblib",
    "sklearn.base",
    "sklearn.linear_model",
    "sklearn.ensemble",
    "sklearn.model_selection",
    "sklearn.metrics",
]


def _context() -> ForkServerContext:
    ctx = multiprocessing.get_context("forkserver")
    assert isinstance(ctx, ForkServerContext)
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def _kill_group(pid: int, sig: signal.Signals) -> bool:
    try:
        os.killpg(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


_LAUNCH_LOCK = threading.Lock()


class _Popen(popen_forkserver.Popen):
    """Starts a forkserver child *without* re-importing the runner's ``__main__`` in it, and
    reads its exit code from one thread at a time.

    ``multiprocessing`` makes each child import the parent's main script (so that functions
    defined there can be unpickled). A step needs none of it — its code comes from the pipeline
    file — and importing the CLI or a test runner in every step would cost more than the fork.

    The forkserver sends a child's exit code once, as 8 bytes on the sentinel pipe, and
    ``poll`` reads them without a lock. Every ``Process.start()`` polls all live children
    (``multiprocessing.process._cleanup``), so while the warm-process thread starts a process,
    it can poll a step that a runner thread is joining: both see the sentinel readable, one reads
    the code and the other reads end-of-file, which CPython reports as exit code 255 (a step
    that succeeded was recorded as failed: "exited with code 255").
    """

    def __init__(self, process_obj: Any) -> None:
        self._poll_lock = threading.Lock()
        super().__init__(process_obj)

    def poll(self, flag: int = os.WNOHANG) -> int | None:
        with self._poll_lock:
            code: int | None = super().poll(flag)
            return code

    def _launch(self, process_obj: Any) -> None:
        original = spawn.get_preparation_data

        def without_main(name: str) -> dict[str, Any]:
            data = original(name)
            data.pop("init_main_from_path", None)
            data.pop("init_main_from_name", None)
            return data

        with _LAUNCH_LOCK:
            spawn.get_preparation_data = without_main
            try:
                super()._launch(process_obj)  # type: ignore[misc]
            finally:
                spawn.get_preparation_data = original


class _StepProcess(ForkServerProcess):
    @staticmethod
    def _Popen(process_obj: Any) -> _Popen:
        return _Popen(process_obj)


def rss_bytes(pid: int) -> int:
    """Resident memory of one process (0 once it is gone)."""
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0


class LocalStepHandle:
    """One running step attempt: a process that leads its own process group.

    :meth:`sample` reports the tree's RSS *above* ``baseline_rss_bytes``, the warm process's
    RSS before it got its task: a forked child counts the pages it shares with the forkserver
    (the preloaded interpreter, ~150 MiB with pandas and scikit-learn) as its own, and a step
    that declared 64Mi must not be killed for memory it did not allocate. The recorded peak
    (``peak_rss_bytes``) stays the full RSS.
    """

    def __init__(
        self,
        process: Any,
        task: StepTask,
        baseline_rss_bytes: int = 0,
        governor: Governor | None = None,
    ) -> None:
        self._process = process
        self._task = task
        self._governor = governor
        self._baseline_rss_bytes = baseline_rss_bytes
        self._peak_rss_bytes = 0
        self._cpu_seconds = 0.0
        try:
            self._ps: psutil.Process | None = psutil.Process(process.pid)
        except psutil.NoSuchProcess:
            self._ps = None

    @property
    def pid(self) -> int | None:
        pid: int | None = self._process.pid
        return pid

    def wait(self, timeout_s: float) -> StepOutcome | None:
        self._process.join(timeout_s)
        if self._process.exitcode is None:
            return None
        _kill_group(self._process.pid, signal.SIGKILL)  # leave no orphaned grandchildren
        if self._governor is not None:
            self._governor.stop()
        return self._outcome(self._process.exitcode)

    def sample(self) -> UsageSample | None:
        if self._ps is None:
            return None
        tree = sample_tree(self._ps)
        if tree is None:
            return None
        self._peak_rss_bytes = max(self._peak_rss_bytes, tree.rss_bytes)
        self._cpu_seconds = max(self._cpu_seconds, tree.cpu_seconds)
        rss = max(tree.rss_bytes - self._baseline_rss_bytes, 0)
        return UsageSample(rss, tree.cpu_seconds, tree.processes)

    def kill(self, grace_s: float) -> None:
        pid = self._process.pid
        if self._governor is not None:
            self._governor.stop()  # a step held stopped must run to handle its SIGTERM
        if not _kill_group(pid, signal.SIGTERM):
            self._process.terminate()  # not yet its own group leader
        self._process.join(grace_s)
        _kill_group(pid, signal.SIGKILL)
        if self._process.exitcode is None:
            self._process.kill()
        self._process.join()
        if self._governor is not None:
            self._governor.stop()  # now that it is gone: its cgroup can go too

    def _outcome(self, exitcode: int) -> StepOutcome:
        result = StepResult.read(self._task.result_path)
        reported = result.peak_rss_bytes if result is not None else None
        peak = max(self._peak_rss_bytes, int(reported or 0)) or None
        cpu = result.cpu_seconds if result is not None else (self._cpu_seconds or None)
        cpu = float(cpu) if cpu is not None else None
        if exitcode == 0 and result is not None and result.ok:
            return result.outcome(0, peak, cpu)
        if result is not None and not result.ok:
            reason = str(result.reason)
        elif exitcode < 0:
            reason = f"killed by signal {signal.Signals(-exitcode).name}"
        elif exitcode > 0:
            reason = f"exited with code {exitcode}"
        else:
            reason = "exited without a result"
        return StepOutcome(False, reason, exitcode, {}, peak, cpu)


class _Warm:
    """A started step process waiting for its one task, and the pipe that will carry it."""

    def __init__(self) -> None:
        receive, self.send = multiprocessing.Pipe(duplex=False)
        self.process = _StepProcess(
            target=idle_main, args=(receive, os.getpid()), name="shipyard-step"
        )
        self.process.start()
        receive.close()


_OPEN: weakref.WeakSet[LocalExecutor] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """Let warm processes go before ``multiprocessing`` joins its children at exit (atexit
    runs handlers last-registered first, and this module is imported after it)."""
    for executor in list(_OPEN):
        executor.close()


class LocalExecutor:
    """Runs each step attempt in a fresh process of its own, forked from a warm forkserver.

    ``warm`` processes are kept started ahead of need (a background thread replaces each one
    taken), so that a step does not wait for the fork; each serves exactly one attempt.
    """

    name = "local"

    def __init__(self, warm: int = 2) -> None:
        self._ctx = _context()
        # Start (and preload) the server now, so that a step's time and timeout do not
        # include the one-off imports.
        forkserver.ensure_running()
        self._warm_target = warm
        self._idle: list[_Warm] = []
        self._cond = threading.Condition()
        self._closed = False
        self._filler = threading.Thread(target=self._fill, daemon=True, name="shipyard-warm")
        self._filler.start()
        _OPEN.add(self)

    def _fill(self) -> None:
        while True:
            with self._cond:
                while not self._closed and len(self._idle) >= self._warm_target:
                    self._cond.wait()
                if self._closed:
                    return
            try:
                warm = _Warm()
            except OSError:
                return
            with self._cond:
                if self._closed:
                    warm.send.close()
                    return
                self._idle.append(warm)

    def _take(self) -> _Warm:
        with self._cond:
            while self._idle:
                warm = self._idle.pop(0)
                self._cond.notify_all()
                if warm.process.is_alive():
                    return warm
                warm.send.close()
        return _Warm()

    def start(
        self, task: StepTask, limits: ProcessLimits, on_launch: Callable[[int | None], None]
    ) -> LocalStepHandle:
        child_limits = dataclasses.replace(limits, watchdog=None, governor=None)
        warm = self._take()
        baseline = rss_bytes(warm.process.pid) if warm.process.pid else 0
        governor = limits.governor
        try:
            # Held to its CPU share before it has its task (and so before it starts anything),
            # and before the attempt is recorded, so that the record names what acted.
            if governor is not None and warm.process.pid:
                governor.start(warm.process.pid)
            on_launch(warm.process.pid)
            warm.send.send((task, child_limits))
        except BaseException:
            if governor is not None:
                governor.stop()
            raise
        finally:
            warm.send.close()
        return LocalStepHandle(warm.process, task, baseline, governor)

    def close(self) -> None:
        """End the warm processes (each exits when its pipe closes)."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._cond.notify_all()
        for warm in idle:
            warm.send.close()
            warm.process.join(1.0)
