"""The runner: builds the DAG, admits and starts steps, watches them, records everything.

Scheduling: a step starts once all its inputs' steps succeeded; each started step is driven by a
thread of its own (``_drive``) through admission (:class:`~.executor.Admission`), limits
(:class:`~.executor.Enforcer`), the executor, retries with exponential backoff and its timeout.
Independent steps therefore run in parallel as far as admission allows (by default: the sum of
declared cpu ≤ this machine's CPUs). The first step that fails for good cancels the rest: steps
running are killed (SIGTERM, then SIGKILL, to the process group) and recorded ``cancelled``,
steps not started become ``cancelled``, and the run ends ``failed``. SIGINT or SIGTERM to the
runner cancels the same way and ends the run ``cancelled``.

Quota: with a pool (``pool=``, ``Pipeline(pool=…)``, or ``settings.quota.default_pool`` once
declared — see :mod:`.reservation`), steps are admitted by
:class:`~shipyard.quota.admission.QuotaAdmission` (a lease per attempt in the shared store);
with ``reserve=True`` one lease holds the DAG's peak demand from before the first step to the
end. With or without a pool, steps are limited by :class:`~shipyard.quota.enforce.QuotaEnforcer`
(memory watchdog, CPU affinity, thread pools): a pool decides admission, not whether the
declared limits apply. When the run ends,
``shipyard.monitoring.on_run_finished(workspace, run_id)`` is called if it exists; it can never
fail the run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from shipyard.errors import InvalidInput
from shipyard.pipelines import records, reservation
from shipyard.pipelines.driving import RunDriver, RunResult, StepView
from shipyard.pipelines.dsl import Pipeline
from shipyard.pipelines.executor import (
    Admission,
    Enforcer,
    Executor,
    LocalAdmission,
)
from shipyard.workspace import Workspace

__all__ = ["RunResult", "Runner", "StepView"]


class Runner:
    """Runs pipelines in a workspace.

    ``executor`` defaults to :class:`~.local.LocalExecutor`. ``admission``, when not given,
    follows the run's pool: quota's admission in a pool, else :class:`~.executor.LocalAdmission`;
    ``enforcer`` defaults to quota's enforcer either way. ``reserve`` takes
    one lease for the DAG's peak demand before the first step (it needs a pool).
    ``on_change(views)`` is called from the calling thread whenever a step changes state and at
    least every ``tick_s`` while the run goes.
    """

    def __init__(
        self,
        workspace: Workspace,
        executor: Executor | None = None,
        admission: Admission | None = None,
        enforcer: Enforcer | None = None,
        *,
        pool: str | None = None,
        priority: int = 0,
        reserve: bool = False,
        kill_grace_s: float = 3.0,
        sample_interval_s: float = 0.1,
        tick_s: float = 0.25,
        on_change: Callable[[dict[str, StepView]], None] | None = None,
    ) -> None:
        if executor is None:
            from shipyard.pipelines.local import LocalExecutor

            executor = LocalExecutor()
        self.workspace = workspace
        self.executor = executor
        self.admission: Admission | None = admission
        self.enforcer: Enforcer | None = enforcer
        self._local = LocalAdmission()
        self.pool = pool
        self.priority = priority
        self.reserve = reserve
        self.kill_grace_s = kill_grace_s
        self.sample_interval_s = sample_interval_s
        self.tick_s = tick_s
        self.on_change = on_change

    def close(self) -> None:
        """Release the executor (its warm processes)."""
        self.executor.close()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the run ---------------------------------------------------------------------------
    def run(
        self,
        file: str | Path,
        pipeline: Pipeline,
        params: Mapping[str, Any] | None = None,
        tags: dict[str, Any] | None = None,
    ) -> RunResult:
        params = dict(params or {})
        graph = pipeline.build(params)
        full_params = {
            name: p.default for name, p in pipeline.parameters.items() if p.default is not p.empty
        } | params
        ws = self.workspace
        pool = self.pool if self.admission is not None else None
        if self.admission is None:
            pool = reservation.resolve_pool(ws, pipeline, self.pool).name
        if self.reserve and pool is None:
            raise InvalidInput("--reserve needs a pool: name one with --pool")
        new = records.create_run(
            ws.store,
            ws.clock,
            pipeline,
            Path(file).resolve(),
            graph,
            full_params,
            executor=self.executor.name,
            actor=ws.actor,
            logs_dir=ws.settings.logs_dir,
            tags=tags,
        )
        if pool is not None:
            reservation.record_pool(ws, pipeline.name, pool)
        run = RunDriver(self, Path(file).resolve(), pipeline, graph, new, pool)
        try:
            return run.go()
        finally:
            run.close()

    def _quota(self, pool: str | None) -> tuple[Admission, Enforcer, Any]:
        """Admission and enforcer for a run in ``pool``, and (with ``reserve``) the lease manager
        that holds the run's reservation, to close after the run."""
        from shipyard.quota.admission import LeaseManager
        from shipyard.quota.enforce import QuotaEnforcer

        ws = self.workspace
        enforcer = self.enforcer or QuotaEnforcer(ws.settings.quota.memory_margin)
        if self.admission is not None:
            return self.admission, enforcer, None
        if pool is None:
            return self._local, enforcer, None
        leases = None
        if self.reserve:
            quota = ws.settings.quota
            leases = LeaseManager(
                ws.store,
                clock=ws.clock,
                lease_ttl_s=quota.lease_ttl_s,
                default_pool=quota.default_pool,
            )
        return reservation.PerAttemptQuota(ws), enforcer, leases
