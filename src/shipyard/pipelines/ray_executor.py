"""The Ray executor: every step attempt as one Ray task, placed by its declared resources.

``shipyard run FILE --executor ray [--address ADDR]``. Quota admission stays in Shipyard's store
(:mod:`shipyard.quota`), so caps, fair share and priorities hold across the whole cluster; Ray
only places the admitted attempt on a node that has what it declared:

=====================  =============================================
declared (``Resources``)  Ray task option
=====================  =============================================
``cpu``                ``num_cpus`` (fractions allowed)
``gpu``                ``num_gpus``
``memory`` (bytes)     ``memory`` (a scheduling resource in Ray)
any accelerator name   ``resources={name: amount}`` (custom resource)
=====================  =============================================

What stays the same as with the local executor: the step's code runs through
:func:`shipyard.pipelines.child.worker_main` (output into the step's log, artifacts written by
the step itself to the shared artifact store — an fsspec URL the cluster can reach — never into
Ray's object store), the result (outputs, usage, reason) comes back as the task's return value
and the runner records it exactly as it records a local attempt.

Isolation: by default the remote function has ``max_calls=1``, so each attempt gets a Ray worker
process of its own that exits afterwards (a step's imports, environment and memory never leak
into the next one, and its peak RSS and CPU time are its own), at the price of a worker start
and the imports per step — 1.4–2.5 s per step on 2 cores (``benchmarks/ray_executor.py``).
``reuse_workers=True`` lets Ray reuse warm workers (≈ 19 ms per step): the task puts back what
the step changed in the process and reports its own share of CPU time; its peak RSS is then
known only when it rose above the worker's earlier peak (else the runner's samples stand in).
Ray has no retries here (``max_retries=0``): Shipyard retries, under its own admission.

Placement: before submitting, the attempt is checked against every alive node's total resources
(``ray.nodes()``). An attempt that no node can hold fails at once with a clear reason, since Ray
itself would leave it pending forever (ray-project/ray#16782, #45909; a driver that starts its
own local Ray also sets ``RAY_enable_infeasible_task_early_exit=true``).

Limits: the runner's watchdog samples the attempt's worker (its pid and the RSS it had before the
step are reported by the task itself) when the worker runs on this machine; on another node only
Ray's own memory monitor applies. The enforcer's CPU affinity, CPU share and
``CUDA_VISIBLE_DEVICES`` are not applied on Ray — Ray chooses the node and sets the visible GPUs
itself; the thread-count variables are. The step's record says so: its affinity ``not applied``,
and its memory watchdog (and the step's ``SHIPYARD_MEMORY_ENFORCEMENT``) ``not applied`` unless
the worker runs on the runner's machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from shipyard.errors import ConfigError
from shipyard.pipelines.executor import (
    ProcessLimits,
    StepOutcome,
    StepResult,
    StepTask,
    UsageSample,
)
from shipyard.process_tree import sample_tree

INSTALL_HINT = "the Ray executor needs Ray: pip install 'shipyard[ray]'"
RAY_NAMES = {"cpu": "CPU", "gpu": "GPU", "memory": "memory"}


# the same words as the runner's record (driving.py); not imported from there, so that a Ray
# worker unpickling this module's task does not import the runner
NOT_APPLIED = "not applied"
MEMORY_LABEL = "SHIPYARD_MEMORY_ENFORCEMENT"


def import_ray() -> Any:
    """``ray``, or :class:`~shipyard.errors.ConfigError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return ray


def ray_options(resources: dict[str, float]) -> dict[str, Any]:
    """Ray task options for declared resources (see the module docstring)."""
    options: dict[str, Any] = {"num_cpus": float(resources.get("cpu", 0.0))}
    if resources.get("gpu"):
        options["num_gpus"] = float(resources["gpu"])
    if resources.get("memory"):
        options["memory"] = int(resources["memory"])
    custom = {name: float(v) for name, v in resources.items() if name not in RAY_NAMES and v > 0}
    if custom:
        options["resources"] = custom
    return options


def unplaceable(resources: dict[str, float], nodes: list[dict[str, Any]]) -> str | None:
    """Why no alive node can ever hold ``resources`` (``None`` when one can)."""
    wanted = {RAY_NAMES.get(k, k): v for k, v in resources.items() if v > 0}
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive")]
    if not alive:
        return "the Ray cluster has no alive node"
    for total in alive:
        if all(float(total.get(k, 0.0)) + 1e-9 >= v for k, v in wanted.items()):
            return None
    most = {k: max(float(t.get(k, 0.0)) for t in alive) for k in wanted}
    short = [k for k, v in wanted.items() if v > most[k] + 1e-9]
    if short:
        asks = ", ".join(f"{k}={wanted[k]:g}" for k in short)
        has = ", ".join(f"{k}={most[k]:g}" for k in short)
        return f"no Ray node can ever place it: it asks {asks}, the largest node has {has}"
    asks = ", ".join(f"{k}={v:g}" for k, v in wanted.items())
    return f"no single Ray node has all of {asks} at once"


def limits_on(node: str, runner_node: str, limits: ProcessLimits) -> ProcessLimits:
    """The limits a Ray worker on ``node`` applies: on another machine than the runner's, no
    watchdog samples it, so the step's memory label says ``not applied``."""
    if node == runner_node or MEMORY_LABEL not in limits.env:
        return limits
    return dataclasses.replace(limits, env={**limits.env, MEMORY_LABEL: NOT_APPLIED})


def _run_step(
    task: StepTask, limits: ProcessLimits, reuse: bool = False, runner_node: str = ""
) -> StepResult:
    """The Ray task: report where it runs, then run the step like a local step process.

    With ``reuse`` the worker serves further tasks afterwards, so what the step changed in the
    process (output descriptors, folder, environment, the pipeline module) is put back, and the
    usage is this task's share of the worker's counters (peak RSS only when it rose)."""
    from shipyard.pipelines.child import process_usage, worker_main

    me = psutil.Process()
    where = {"pid": os.getpid(), "rss_bytes": me.memory_info().rss, "node": os.uname().nodename}
    with contextlib.suppress(OSError):
        Path(_where_path(task)).write_text(json.dumps(where), encoding="utf-8")
    limits = limits_on(str(where["node"]), runner_node or str(where["node"]), limits)
    if not reuse:
        return worker_main(task, limits)
    from shipyard.pipelines.loader import module_name

    before = process_usage()
    fds, streams = (os.dup(1), os.dup(2)), (sys.stdout, sys.stderr)
    cwd, env = os.getcwd(), dict(os.environ)
    try:
        result = worker_main(task, limits)
    finally:
        sys.stdout, sys.stderr = streams
        for fd, target in zip(fds, (1, 2), strict=True):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        sys.modules.pop(module_name(Path(task.file).expanduser().resolve()), None)
    after = process_usage()
    rose = after["peak_rss_bytes"] > before["peak_rss_bytes"]
    return dataclasses.replace(
        result,
        cpu_seconds=after["cpu_seconds"] - before["cpu_seconds"],
        peak_rss_bytes=after["peak_rss_bytes"] if rose else None,
    )


def _where_path(task: StepTask) -> str:
    return f"{task.result_path}.where"


class RayStepHandle:
    """One attempt submitted to Ray."""

    def __init__(self, ray: Any, ref: Any, task: StepTask) -> None:
        self._ray = ray
        self._ref = ref
        self._task = task
        self._where: dict[str, Any] | None = None
        self._ps: psutil.Process | None = None
        self._peak_rss_bytes = 0
        self._outcome: StepOutcome | None = None

    @property
    def pid(self) -> int | None:
        where = self._locate()
        return int(where["pid"]) if where else None

    def _locate(self) -> dict[str, Any] | None:
        if self._where is None:
            try:
                where = json.loads(Path(_where_path(self._task)).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return None
            if where.get("node") != os.uname().nodename:
                where["pid"] = None  # on another machine: nothing to sample from here
            self._where = where
            with contextlib.suppress(psutil.Error, TypeError, ValueError):
                self._ps = psutil.Process(int(where["pid"]))
        return self._where

    def wait(self, timeout_s: float) -> StepOutcome | None:
        if self._outcome is not None:
            return self._outcome
        ready, _ = self._ray.wait([self._ref], timeout=max(timeout_s, 0.0))
        if not ready:
            return None
        self._outcome = self._collect()
        return self._outcome

    def _collect(self) -> StepOutcome:
        ray = self._ray
        try:
            result: StepResult = ray.get(self._ref)
        except ray.exceptions.TaskCancelledError:
            return StepOutcome(False, "cancelled on Ray", None, {}, self._peak_rss_bytes or None)
        except ray.exceptions.OutOfMemoryError as exc:
            return StepOutcome(False, f"killed by Ray's memory monitor: {_first_line(exc)}", None)
        except ray.exceptions.WorkerCrashedError as exc:
            reason = f"Ray worker died: {_first_line(exc)}"
            return StepOutcome(False, reason, None, {}, self._peak_rss_bytes or None)
        except ray.exceptions.RayError as exc:
            return StepOutcome(False, f"Ray: {type(exc).__name__}: {_first_line(exc)}", None)
        peak = max(self._peak_rss_bytes, int(result.peak_rss_bytes or 0)) or None
        cpu = float(result.cpu_seconds) if result.cpu_seconds is not None else None
        return result.outcome(0 if result.ok else 1, peak, cpu)

    def sample(self) -> UsageSample | None:
        where = self._locate()
        if where is None or self._ps is None:
            return None
        tree = sample_tree(self._ps)
        if tree is None:
            return None
        self._peak_rss_bytes = max(self._peak_rss_bytes, tree.rss_bytes)
        baseline = int(where.get("rss_bytes") or 0)
        return UsageSample(max(tree.rss_bytes - baseline, 0), tree.cpu_seconds, tree.processes)

    def kill(self, grace_s: float) -> None:
        """Kill the step's own children, then the task (``ray.cancel(force=True)`` ends its
        worker) and wait up to ``grace_s`` for Ray to report it."""
        if self._ps is not None:
            with contextlib.suppress(psutil.Error):
                for child in self._ps.children(recursive=True):
                    child.kill()
        with contextlib.suppress(Exception):
            self._ray.cancel(self._ref, force=True)
        self.wait(max(grace_s, 0.1))


class _Refused:
    """The handle of an attempt that was never submitted (no node can place it)."""

    pid = None

    def __init__(self, reason: str) -> None:
        self._outcome = StepOutcome(False, reason, None)

    def wait(self, timeout_s: float) -> StepOutcome | None:
        return self._outcome

    def sample(self) -> UsageSample | None:
        return None

    def kill(self, grace_s: float) -> None:
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class RayExecutor:
    """Submits step attempts to a Ray cluster: ``address`` (``"auto"``, ``"ray://host:10001"``,
    ``"host:6379"``), else the cluster this process is already connected to, else a local Ray
    started for this process (and shut down by :meth:`close`)."""

    name = "ray"

    def __init__(
        self, address: str | None = None, *, reuse_workers: bool = False, **init_kwargs: Any
    ) -> None:
        ray = import_ray()
        self._ray = ray
        self._owns = False
        if not ray.is_initialized():
            if address is None:
                os.environ.setdefault("RAY_enable_infeasible_task_early_exit", "true")
                init_kwargs.setdefault("include_dashboard", False)
            try:
                ray.init(address=address, log_to_driver=False, **init_kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ConfigError(f"cannot connect to Ray at {address or 'local'}: {exc}") from None
            self._owns = True
        self.reuse_workers = reuse_workers
        options: dict[str, Any] = {"max_retries": 0, "retry_exceptions": False}
        if not reuse_workers:
            options["max_calls"] = 1
        self._remote = ray.remote(**options)(_run_step)

    def start(
        self, task: StepTask, limits: ProcessLimits, on_launch: Callable[[int | None], None]
    ) -> RayStepHandle | _Refused:
        reason = unplaceable(task.resources, self._ray.nodes())
        if reason is not None:
            return _Refused(f"step {task.node!r}: {reason}")
        env = {k: v for k, v in limits.env.items() if k != "CUDA_VISIBLE_DEVICES"}
        remote_limits = dataclasses.replace(
            limits, env=env, cpu_affinity=None, watchdog=None, governor=None
        )
        on_launch(None)  # no process here: the record says what is not applied
        options = ray_options(task.resources)
        ref = self._remote.options(**options).remote(
            task, remote_limits, self.reuse_workers, os.uname().nodename
        )
        return RayStepHandle(self._ray, ref, task)

    def close(self) -> None:
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
            self._owns = False
