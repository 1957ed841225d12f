"""Enforcement on one machine: CPUs, thread pools, accelerators and memory for a step process.

* **CPU**: an affinity list of ``ceil(cpu)`` CPUs (``os.sched_setaffinity``, applied by the
  step process to itself before the step's code runs: ``ProcessLimits.apply_here``) and the
  thread-pool variables numerical libraries read at start-up: ``OMP_NUM_THREADS`` (OpenMP),
  ``MKL_NUM_THREADS`` (Intel MKL), ``OPENBLAS_NUM_THREADS`` (OpenBLAS), ``NUMEXPR_NUM_THREADS``,
  ``VECLIB_MAXIMUM_THREADS``. A fractional request (``cpu=0.5``) is also held to its share of
  those CPUs by a :class:`~shipyard.quota.cpu_share.CpuShare` governor (the executor starts it
  on the step's process): the kernel's CFS quota where a cgroup can be written, else a
  watchdog duty cycle. The step's record says which acted (``cpu_enforcement``).
* **Accelerators**: ``CUDA_VISIBLE_DEVICES`` lists the granted GPU indices (empty: none), so a
  step sees only what it was granted.
* **Memory**: the runner samples the RSS of the step's whole process tree (``psutil``, every
  ``sample_interval_s``) and kills the tree when it exceeds what the step declared
  × (1 + ``settings.quota.memory_margin``); the reason reads ``exceeded memory quota: used X of
  Y (watchdog)``. This holds with or without a pool. It is a watchdog, not a kernel limit: a
  step can overshoot by what it allocates between two samples. No cgroup ``memory.max`` is
  written: cgroup v2 lets a process limit a child cgroup only from a delegated subtree it does
  not itself sit in, which a runner in a container or a login session does not have; a cluster
  that needs a hard limit runs steps on Ray (or Kubernetes), whose own limits apply.
"""

from __future__ import annotations

import math
import os
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil

from shipyard.pipelines.executor import Grant, ProcessLimits, StepRequest, UsageSample
from shipyard.process_tree import tree_rss_bytes
from shipyard.quantities import format_amount
from shipyard.quota.cpu_share import MECHANISMS, CpuShare

THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)
GPU_RESOURCES = ("gpu", "nvidia.com/gpu")


def memory_reason(used_bytes: float, limit_bytes: float, mechanism: str) -> str:
    return (
        f"exceeded memory quota: used {format_amount('memory', used_bytes)} of "
        f"{format_amount('memory', limit_bytes)} ({mechanism})"
    )


@dataclass
class MemoryWatchdog:
    """Kill a process tree whose RSS (children included) exceeds ``limit_bytes``.

    As a callable it is the runner's watchdog (``watchdog(sample) -> reason | None``); with
    :meth:`watch` it samples a pid itself in a thread, for callers without a sampling loop."""

    limit_bytes: float
    declared_bytes: float
    mechanism: str = "watchdog"
    interval_s: float = 0.05
    reason: str | None = None
    peak_rss_bytes: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def __call__(self, sample: UsageSample) -> str | None:
        self.peak_rss_bytes = max(self.peak_rss_bytes, sample.rss_bytes)
        if sample.rss_bytes > self.limit_bytes:
            self.reason = memory_reason(sample.rss_bytes, self.declared_bytes, self.mechanism)
            return self.reason
        return None

    def watch(self, pid: int) -> threading.Thread:
        thread = threading.Thread(target=self._loop, args=(pid,), daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def _loop(self, pid: int) -> None:
        while not self._stop.is_set():
            rss = tree_rss_bytes(pid)
            if rss is None:
                return
            if self(UsageSample(rss, 0.0, 1)) is not None:
                kill_tree(pid)
                return
            self._stop.wait(self.interval_s)


def kill_tree(pid: int) -> None:
    """SIGKILL a process and every descendant (children first seen, then the root)."""
    try:
        root = psutil.Process(pid)
        victims = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return
    for proc in victims:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            continue


class QuotaEnforcer:
    """The pipelines runner's :class:`~shipyard.pipelines.executor.Enforcer`.

    CPUs are handed out round-robin over this process's own affinity set, so concurrent steps
    spread over the machine; GPU indices come from the grant's ``assigned`` detail when the pool
    names devices, else ``0 … n-1``.
    """

    def __init__(
        self,
        memory_margin: float = 0.10,
        cpus: list[int] | None = None,
        cpu_mechanisms: Sequence[str] = MECHANISMS,
    ) -> None:
        self.memory_margin = memory_margin
        self.cpu_mechanisms = tuple(cpu_mechanisms)
        self.cpus = sorted(cpus if cpus is not None else os.sched_getaffinity(0))
        self.mechanism = "watchdog"  # the only one: see the module docstring
        self._next = 0
        self._lock = threading.Lock()

    def _pick_cpus(self, count: int) -> list[int]:
        count = min(max(count, 1), len(self.cpus))
        with self._lock:
            start = self._next
            self._next = (self._next + count) % len(self.cpus)
        return sorted(self.cpus[(start + i) % len(self.cpus)] for i in range(count))

    def prepare(self, request: StepRequest, grant: Grant) -> ProcessLimits:
        granted = grant.granted or request.resources
        env: dict[str, str] = {}
        affinity: list[int] | None = None
        cpu = float(granted.get("cpu", 0.0))
        governor: CpuShare | None = None
        if cpu > 0:
            affinity = self._pick_cpus(math.ceil(cpu))
            for name in THREAD_VARIABLES:
                env[name] = str(len(affinity))
            # a share of what the affinity allows: all of it for whole cores
            governor = CpuShare(min(cpu, float(len(affinity))), self.cpu_mechanisms)
        gpus = sum(int(granted.get(name, 0)) for name in GPU_RESOURCES)
        assigned: dict[str, Any] = dict(grant.detail.get("assigned") or {})
        devices = assigned.get("gpu") or list(range(gpus))
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(d) for d in devices[:gpus])
        if grant.detail.get("fence"):  # for a resource that checks holders' fencing tokens
            env["SHIPYARD_LEASE_ID"] = grant.lease_id
            env["SHIPYARD_LEASE_FENCE"] = str(grant.detail["fence"])
        memory = float(granted.get("memory", 0.0))
        watchdog: Callable[[UsageSample], str | None] | None = None
        limit: int | None = None
        if memory > 0:
            limit = int(memory * (1 + self.memory_margin))
            watchdog = MemoryWatchdog(limit, memory, self.mechanism)
            env["SHIPYARD_MEMORY_ENFORCEMENT"] = self.mechanism
        return ProcessLimits(env, affinity, limit, watchdog, governor)
