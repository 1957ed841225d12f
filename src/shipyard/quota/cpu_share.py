"""A fractional CPU request held as a share of a core, from outside the step's process.

A step that declares ``cpu=0.5`` gets an affinity of one CPU (``ceil``), which alone lets it use
the whole core. :class:`CpuShare` holds it to half of it, by the first mechanism that works:

* **CFS bandwidth control** (the kernel's own, as Kubernetes applies a container's CPU limit):
  the step's process goes into a cgroup of its own whose quota is ``cores × period`` of CPU time
  per ``period`` (100 ms): cgroup v2 ``cpu.max`` (``"50000 100000"``), else cgroup v1
  ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (Linux ``Documentation/scheduler/sched-bwc``).
  It needs a cgroup directory this process may create children in: v2 with the ``cpu``
  controller enabled for its children (a delegated subtree, or the root of a container's
  cgroup namespace), or a writable v1 ``cpu`` hierarchy. The cgroup is named
  ``shipyard-<runner pid>-<n>`` beside the runner's own and removed when the step has ended;
  one left by a runner that died is removed by the next runner that makes one there.
* **A watchdog duty cycle**, where no cgroup can be written: a thread of the runner measures the
  CPU seconds of the step's process tree every 50 ms and keeps a token bucket that fills at
  ``cores`` CPU-seconds per second (at most 100 ms' worth banked); when the step has used more
  than it was given, its process group is stopped (``SIGSTOP``) until the bucket is back to
  zero, then continued (``SIGCONT``). CPU is a compressible resource: a step over its share is
  slowed, as the kernel's quota slows it, never killed (memory, which cannot be taken back, is
  what the memory watchdog kills for). Its limits: a step may overshoot by what it runs in one
  50 ms interval, and a runner killed by ``SIGKILL`` while the step is stopped leaves it
  stopped until the daemon's reconcile ends the orphaned run (``runs.reconcile`` kills the
  group).

Whole cores need neither: the affinity of ``cores`` CPUs is the limit. :attr:`CpuShare.mechanism`
names the mechanism that acted (``not applied`` until an executor started it: a Ray worker gets
none), and it is what the step's enforcement record says.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from shipyard.process_tree import sample_tree

CFS_PERIOD_US = 100_000
CFS_MIN_QUOTA_US = 1_000  # the kernel refuses a quota under 1 ms
DUTY_INTERVAL_S = 0.05  # each reading scans /proc for the tree: 20 a second is cheap enough
DUTY_BURST_S = 0.1

NOT_APPLIED = "not applied"
AFFINITY = "affinity (sched_setaffinity)"
WATCHDOG = "watchdog (SIGSTOP/SIGCONT duty cycle)"
MECHANISMS = ("cgroup", "watchdog")

_counter = itertools.count(1)
_active: set[Path] = set()
_active_lock = threading.Lock()


@dataclass(frozen=True)
class CgroupParent:
    """A cgroup directory to create step cgroups in, and its hierarchy's version."""

    path: Path
    version: int


def _mounts(mountinfo: str) -> list[tuple[str, str, str, set[str]]]:
    """(root, mount point, file system type, super options) of each cgroup mount."""
    out = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3 or not tail[0].startswith("cgroup"):
            continue
        out.append((fields[3], fields[4], tail[0], set(tail[2].split(","))))
    return out


def cgroup_parents(
    proc_cgroup: str | None = None, mountinfo: str | None = None
) -> list[CgroupParent]:
    """Where this process's own cgroups are, for the ``cpu`` controller: the v2 one when cpu
    is among its controllers, then the v1 ``cpu`` hierarchy (from ``/proc/self/cgroup`` and
    ``/proc/self/mountinfo``)."""
    if proc_cgroup is None:
        proc_cgroup = Path("/proc/self/cgroup").read_text(encoding="utf-8")
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text(encoding="utf-8")
    own: dict[str, str] = {}  # "" for v2, else a v1 controller
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [""]:
                own[controller] = parts[2]
    found: list[CgroupParent] = []
    for root, point, fstype, options in _mounts(mountinfo):
        if fstype == "cgroup2" and "" in own:
            path, version = own[""], 2
        elif fstype == "cgroup" and "cpu" in options and "cpu" in own:
            path, version = own["cpu"], 1
        else:
            continue
        if root != "/" and not (path == root or path.startswith(root.rstrip("/") + "/")):
            continue
        relative = path[len(root) :] if root != "/" else path
        directory = Path(point) / relative.lstrip("/")
        if version == 2:
            try:
                controllers = (directory / "cgroup.controllers").read_text().split()
            except OSError:
                continue
            if "cpu" not in controllers:
                continue
        found.append(CgroupParent(directory, version))
    return sorted(found, key=lambda p: -p.version)


def _sweep(parent: Path) -> None:
    """Remove step cgroups that no live runner owns (rmdir refuses one with processes)."""
    try:
        children = list(parent.glob("shipyard-*-*"))
    except OSError:
        return
    for child in children:
        owner = child.name.split("-")[1]
        mine = owner == str(os.getpid())
        with _active_lock:
            active = child in _active
        if active or (not mine and owner.isdigit() and psutil.pid_exists(int(owner))):
            continue
        with contextlib.suppress(OSError):
            child.rmdir()


class CpuCgroup:
    """One step's cgroup with a CFS bandwidth limit of ``cores``."""

    def __init__(self, path: Path, version: int) -> None:
        self.path = path
        self.version = version

    @property
    def label(self) -> str:
        control = "cpu.max" if self.version == 2 else "cpu.cfs_quota_us"
        return f"cfs-quota (cgroup v{self.version} {control})"

    @classmethod
    def create(cls, cores: float, parents: Sequence[CgroupParent] | None = None) -> CpuCgroup:
        """A new cgroup limited to ``cores`` under the first parent that allows it; ``OSError``
        (with every parent's reason) when none does."""
        quota_us = max(CFS_MIN_QUOTA_US, round(cores * CFS_PERIOD_US))
        reasons = []
        for parent in cgroup_parents() if parents is None else parents:
            _sweep(parent.path)
            path = parent.path / f"shipyard-{os.getpid()}-{next(_counter)}"
            try:
                if parent.version == 2:
                    _enable_cpu(parent.path)
                path.mkdir()
                with _active_lock:
                    _active.add(path)
                if parent.version == 2:
                    (path / "cpu.max").write_text(f"{quota_us} {CFS_PERIOD_US}")
                else:
                    (path / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
                    (path / "cpu.cfs_quota_us").write_text(str(quota_us))
                return cls(path, parent.version)
            except OSError as exc:
                reasons.append(f"{parent.path} (v{parent.version}): {exc.strerror or exc}")
                cls(path, parent.version).remove()
        raise OSError("no cgroup with the cpu controller may be written: " + "; ".join(reasons))

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def remove(self, settle_s: float = 0.2) -> bool:
        """Remove the cgroup; False while processes are still in it. An exited process can
        keep it busy for a moment after its exit (until it is reaped): an empty ``cgroup.procs``
        is retried for ``settle_s``. Either way it is no longer this runner's to keep, so a
        later sweep removes one that stayed."""
        with _active_lock:
            _active.discard(self.path)
        deadline = time.monotonic() + settle_s
        while True:
            try:
                self.path.rmdir()
                return True
            except FileNotFoundError:
                return True
            except OSError:
                try:
                    empty = not (self.path / "cgroup.procs").read_text().split()
                except OSError:
                    empty = False
                if not empty or time.monotonic() > deadline:
                    return False
                time.sleep(0.01)


def _enable_cpu(parent: Path) -> None:
    """Make sure cgroup v2 hands the cpu controller to ``parent``'s children."""
    control = parent / "cgroup.subtree_control"
    if "cpu" not in control.read_text().split():
        control.write_text("+cpu")


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:  # not (yet) a group leader: the process alone
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    except PermissionError:
        pass


class DutyCycle:
    """Hold a process group to ``cores`` of CPU by stopping and continuing it (see the module
    docstring)."""

    def __init__(
        self, cores: float, interval_s: float = DUTY_INTERVAL_S, burst_s: float = DUTY_BURST_S
    ) -> None:
        self.cores = cores
        self.interval_s = interval_s
        self.burst_s = burst_s
        self.stopped_s = 0.0  # how long the step was held stopped, in all
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    def start(self, pid: int) -> None:
        self._pid = pid
        self._thread = threading.Thread(
            target=self._loop, args=(pid,), daemon=True, name="shipyard-cpu-share"
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        if self._pid is not None:
            _signal_group(self._pid, signal.SIGCONT)

    def _loop(self, pid: int) -> None:
        try:
            proc = psutil.Process(pid)
        except psutil.NoSuchProcess:
            return
        first = sample_tree(proc)
        if first is None:
            return
        before = dict(first.cpu_seconds_by_pid)
        balance, last = 0.0, time.monotonic()
        while not self._stop.wait(self.interval_s):
            sample = sample_tree(proc)
            if sample is None:
                return
            now = time.monotonic()
            used = sum(
                max(t - before.get(p, 0.0), 0.0) for p, t in sample.cpu_seconds_by_pid.items()
            )
            before = dict(sample.cpu_seconds_by_pid)
            balance = min(balance + self.cores * (now - last) - used, self.cores * self.burst_s)
            last = now
            if balance < 0:
                pause = -balance / self.cores
                _signal_group(pid, signal.SIGSTOP)
                try:
                    self._stop.wait(pause)
                finally:
                    _signal_group(pid, signal.SIGCONT)
                self.stopped_s += pause


class CpuShare:
    """The CPU governor :class:`~shipyard.quota.enforce.QuotaEnforcer` hands the executor for
    a step that declared ``cores`` (see the module docstring). Plain data until started, so a
    step's limits stay picklable."""

    def __init__(
        self,
        cores: float,
        mechanisms: Sequence[str] = MECHANISMS,
        parents: Sequence[CgroupParent] | None = None,
    ) -> None:
        self.cores = cores
        self.mechanisms = tuple(mechanisms)
        self.parents = parents
        self.mechanism = NOT_APPLIED
        self.fallback_reason: str | None = None
        self._cgroup: CpuCgroup | None = None
        self._duty: DutyCycle | None = None

    @property
    def whole(self) -> bool:
        return float(self.cores).is_integer()

    def start(self, pid: int) -> None:
        """Hold the process ``pid`` (and all it will start) to the share, before it runs the
        step."""
        if self.whole:
            self.mechanism = AFFINITY
            return
        if "cgroup" in self.mechanisms:
            try:
                cgroup = CpuCgroup.create(self.cores, self.parents)
            except OSError as exc:
                self.fallback_reason = str(exc)
            else:
                try:
                    cgroup.add(pid)
                except OSError as exc:
                    self.fallback_reason = f"{cgroup.path}: {exc.strerror or exc}"
                    cgroup.remove()
                else:
                    self._cgroup, self.mechanism = cgroup, cgroup.label
                    return
        if "watchdog" in self.mechanisms:
            self._duty = DutyCycle(self.cores)
            self._duty.start(pid)
            self.mechanism = WATCHDOG

    def stop(self) -> None:
        """Let go: continue a stopped step, remove its cgroup once it is empty (idempotent)."""
        if self._duty is not None:
            self._duty.stop()
        if self._cgroup is not None and self._cgroup.remove():
            self._cgroup = None
