"""The seams between the runner, the place a step runs, and quota.

Small interfaces, so that a Ray executor is one more :class:`Executor` and the quota wing plugs
its admission and enforcement in without the runner knowing it: this wing defines them, a face
(``shipyard run``) hands quota's implementations to :class:`~.runner.Runner`, as a rollout
controller drives whatever traffic router it was given. The runner imports no other service.

* :class:`Admission` — *may this step run now?* ``acquire(request) -> Grant`` blocks until the
  resources are granted, or raises :class:`~shipyard.errors.QuotaExceeded` for a request that can
  never fit (the step then fails with that message). The runner calls ``heartbeat(grant)`` while
  the step runs (every ``grant.detail["renew_every_s"]``, else :data:`HEARTBEAT_INTERVAL_S`),
  from a thread of its own, and ``release(grant)`` when the attempt ends, whatever the outcome.
  A grant that expires (``grant.detail["expires_at"]``) is *fenced*: ``heartbeat`` returns the
  new expiry or raises :class:`~shipyard.errors.QuotaError` once the grant is lost, and the
  runner kills the step when that happens or when ``expires_at − detail["fence_margin_s"]``
  passes without a renewal (see :mod:`shipyard.quota.admission`). It acquires once per
  attempt, so a step waiting out its retry backoff holds nothing. :class:`LocalAdmission`
  (the default) admits by this machine's CPU count and memory, in-process. The runner calls
  ``acquire`` from a thread of its own per step; when the run is cancelled meanwhile, a grant
  that still arrives is released at once.
* :class:`PoolAdmission` — an :class:`Admission` in named quota pools (``request.pool``), which
  also says whether a pool is declared: quota's
  :class:`~shipyard.quota.admission.QuotaAdmission`. With one, a run goes to the pool it names
  or declares (:mod:`.reservation`), and ``--reserve`` holds the DAG's peak in one grant.
* :class:`Enforcer` — *within what limits?* ``prepare(request, grant) -> ProcessLimits``:
  environment variables (``OMP_NUM_THREADS``…), a CPU affinity list and a memory limit that
  the step process applies to itself before the step's code runs, plus a ``watchdog`` the runner
  calls with every usage sample; a watchdog that returns a reason gets the step killed with that
  reason; and a ``governor`` (:class:`Governor`) that an executor running the step on this
  machine starts on the step's process, to hold it to a fractional CPU share. ``shipyard run``
  hands the runner quota's
  :class:`~shipyard.quota.enforce.QuotaEnforcer`, which applies with or without a pool (a pool
  decides admission, not whether limits apply); a runner given none uses
  :class:`NoEnforcement`, which sets nothing.
* :class:`Executor` — *where does it run?* ``start(task, limits, on_launch) -> StepHandle``;
  the executor calls ``on_launch(pid)`` right before the step's code is handed over (the runner
  records the attempt as running there); the handle answers ``wait(timeout_s)``, ``sample()``
  (usage of the whole process tree) and ``kill(grace_s)``.
  :class:`~shipyard.pipelines.local.LocalExecutor` runs each attempt in its own OS process;
  :class:`~shipyard.pipelines.ray_executor.RayExecutor` submits a Ray task per attempt (with the
  step's declared ``resources``) and maps ``kill`` to ``ray.cancel(force=True)``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import psutil

from shipyard.errors import QuotaExceeded

HEARTBEAT_INTERVAL_S = 5.0


@dataclass(frozen=True)
class StepRequest:
    """What one step attempt asks for, and who asks."""

    pipeline: str
    run_id: str
    step: str
    step_run_id: str
    resources: dict[str, float]
    pool: str | None = None
    priority: int = 0
    attempt: int = 1
    expected_s: float | None = None
    """How long the attempt is expected to take (past runs, at most its declared timeout):
    what a pool's backfill plans with."""
    preemptible: bool = True
    queued_since: float | None = None
    """When the step first asked, for a retry after its grant was taken back (preempted): it
    keeps its place in the pool's queue (``Grant.detail["requested_at"]`` of that grant)."""


@dataclass(frozen=True)
class Grant:
    """Resources granted to one step attempt; ``lease_id`` names it in the granting system."""

    request: StepRequest
    lease_id: str
    granted: dict[str, float]
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class UsageSample:
    """One measurement of a step's process tree."""

    rss_bytes: int
    cpu_seconds: float
    processes: int


class Governor(Protocol):
    """Holds a step to its CPU share from outside the step's process (quota's
    :class:`~shipyard.quota.cpu_share.CpuShare`). An executor that runs the step here calls
    ``start(pid)`` with the step's process before it gets its task, and ``stop()`` once it ended
    or is being killed (idempotent: it continues a stopped step and removes what it made).
    ``mechanism`` names what acted: ``"not applied"`` until started."""

    mechanism: str

    def start(self, pid: int) -> None: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class ProcessLimits:
    """Limits a step process applies to itself before running the step's code, and the
    ``governor`` its executor starts on it."""

    env: dict[str, str] = field(default_factory=dict)
    cpu_affinity: list[int] | None = None
    memory_limit_bytes: int | None = None
    watchdog: Callable[[UsageSample], str | None] | None = None
    governor: Governor | None = None

    def apply_here(self) -> None:
        """What a step process does to itself before the step's code: the environment, then
        the CPU affinity (``os.sched_setaffinity``).

        The memory limit is not an ``RLIMIT_AS``: address space is not memory (numpy, pyarrow
        and BLAS reserve gigabytes they never touch), so the runner's watchdog enforces it on
        the RSS of the whole process tree instead."""
        os.environ.update(self.env)
        if self.cpu_affinity:
            os.sched_setaffinity(0, self.cpu_affinity)

    def to_json(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "cpu_affinity": self.cpu_affinity,
            "memory_limit_bytes": self.memory_limit_bytes,
            "watchdog": self.watchdog is not None,
            "cpu_enforcement": self.governor.mechanism if self.governor is not None else None,
        }


class Admission(Protocol):
    def acquire(self, request: StepRequest) -> Grant: ...

    def heartbeat(self, grant: Grant) -> float | None:
        """Renew the grant: its new expiry (epoch seconds), or ``None`` when it does not
        expire; :class:`~shipyard.errors.QuotaError` when it was lost."""
        ...

    def release(self, grant: Grant) -> None: ...


class PoolAdmission(Admission, Protocol):
    """Admission in named quota pools: ``acquire`` takes a grant in ``request.pool``."""

    def pool_exists(self, pool: str) -> bool:
        """Whether a pool of that name is declared."""
        ...

    def close(self) -> None:
        """Let go of what the admission keeps open (connections, lock files)."""
        ...


class Enforcer(Protocol):
    def prepare(self, request: StepRequest, grant: Grant) -> ProcessLimits: ...


class NoEnforcement:
    """Sets no limit (for callers that enforce elsewhere, e.g. a cluster's own limits)."""

    def prepare(self, request: StepRequest, grant: Grant) -> ProcessLimits:
        return ProcessLimits()


class LocalAdmission:
    """Admits steps while the sum of granted cpu (cores) and memory (bytes) fits this machine.

    Other resources (gpu, accelerators) are admitted against ``capacity`` when given there, and
    refused when a step declares some that this machine does not have.
    """

    def __init__(self, capacity: dict[str, float] | None = None) -> None:
        self.capacity = capacity or {
            "cpu": float(os.cpu_count() or 1),
            "memory": float(psutil.virtual_memory().total),
        }
        self._used: dict[str, float] = {}
        self._cond = threading.Condition()
        self._next = 0

    def _fits(self, wanted: dict[str, float]) -> bool:
        return all(
            self._used.get(k, 0.0) + v <= self.capacity.get(k, 0.0) + 1e-9
            for k, v in wanted.items()
        )

    def acquire(self, request: StepRequest) -> Grant:
        wanted = {k: v for k, v in request.resources.items() if v > 0}
        for name, amount in wanted.items():
            if amount > self.capacity.get(name, 0.0) + 1e-9:
                raise QuotaExceeded(
                    "local", name, amount, self.capacity.get(name, 0.0), "this machine's total"
                )
        with self._cond:
            while not self._fits(wanted):
                self._cond.wait()
            for k, v in wanted.items():
                self._used[k] = self._used.get(k, 0.0) + v
            self._next += 1
            return Grant(request, f"local-{self._next}", wanted)

    def heartbeat(self, grant: Grant) -> float | None:
        return None

    def release(self, grant: Grant) -> None:
        with self._cond:
            for k, v in grant.granted.items():
                self._used[k] = max(0.0, self._used.get(k, 0.0) - v)
            self._cond.notify_all()


@dataclass(frozen=True)
class StepTask:
    """Everything a step process needs, picklable: where the step is and where things go."""

    file: str
    pipeline: str
    kind: str
    run_id: str
    node: str
    step_function: str
    step_run_id: str
    attempt: int
    arguments: dict[str, Any]
    inputs: dict[str, dict[str, Any]]
    outputs: tuple[str, ...]
    settings: dict[str, Any]
    log_path: str
    result_path: str
    resources: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class StepOutcome:
    """How an attempt ended: ``ok``, else the reason (``"ValueError: boom"``,
    ``"killed by signal SIGABRT"``, ``"exited with code 3"``) and the exit code."""

    ok: bool
    reason: str | None
    exit_code: int | None
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    peak_rss_bytes: int | None = None
    cpu_seconds: float | None = None
    input_rows: int | None = None
    input_bytes: int | None = None
    consumed: list[dict[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class StepResult:
    """What the step process reports about its attempt: written by the child
    (:mod:`.child`) as a file next to the step's log, and returned by a Ray task; every
    executor turns it into a :class:`StepOutcome` the same way (:meth:`outcome`).

    ``outputs`` maps each output name to its artifact record; ``consumed`` lists artifacts the
    step read through the step context; the usage is the process's own (``getrusage``)."""

    ok: bool
    reason: str | None = None
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    consumed: list[dict[str, str]] = field(default_factory=list)
    input_rows: int | None = None
    input_bytes: int | None = None
    peak_rss_bytes: int | None = None
    cpu_seconds: float | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StepResult:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def write(self, path: str) -> None:
        """Write atomically: the reader sees the whole result or none."""
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(self.to_json(), fh)
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: str) -> StepResult | None:
        """The result written at ``path``; ``None`` when there is none (the process died
        before writing it) or it cannot be read."""
        try:
            with open(path, encoding="utf-8") as fh:
                return cls.from_json(json.load(fh))
        except (OSError, ValueError, TypeError):
            return None

    def outcome(
        self, exit_code: int | None, peak_rss_bytes: int | None, cpu_seconds: float | None
    ) -> StepOutcome:
        """The attempt's outcome, with the usage the executor settled on."""
        if self.ok:
            return StepOutcome(
                True,
                None,
                0,
                self.outputs,
                peak_rss_bytes=peak_rss_bytes,
                cpu_seconds=cpu_seconds,
                input_rows=self.input_rows,
                input_bytes=self.input_bytes,
                consumed=self.consumed,
            )
        return StepOutcome(False, str(self.reason), exit_code, {}, peak_rss_bytes, cpu_seconds)


class StepHandle(Protocol):
    @property
    def pid(self) -> int | None: ...

    def wait(self, timeout_s: float) -> StepOutcome | None:
        """The outcome once the attempt ended, else ``None`` after ``timeout_s``."""
        ...

    def sample(self) -> UsageSample | None: ...

    def kill(self, grace_s: float) -> None:
        """End the attempt's whole process tree: SIGTERM, then SIGKILL after ``grace_s``."""
        ...


class Executor(Protocol):
    name: str

    def start(
        self, task: StepTask, limits: ProcessLimits, on_launch: Callable[[int | None], None]
    ) -> StepHandle:
        """Launch the attempt. ``on_launch(pid)`` (``None`` where there is no local process)
        must be called just before the step's code is handed over: the runner records the
        attempt as running there, so that nothing runs unrecorded."""
        ...

    def close(self) -> None: ...
