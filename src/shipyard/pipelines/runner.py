"""The runner: builds the DAG, admits and starts steps, watches them, records everything.

Scheduling: a step starts once all its inputs' steps succeeded; each started step is driven by a
thread of its own through admission (:class:`~.executor.Admission`), limits
(:class:`~.executor.Enforcer`), the executor, retries with exponential backoff and its timeout
(:mod:`.driving`). Independent steps therefore run in parallel as far as admission allows (by
default: the sum of declared cpu ≤ this machine's CPUs). The first step that fails for good
cancels the rest: steps running are killed (SIGTERM, then SIGKILL, to the process group) and
recorded ``cancelled``, steps not started become ``cancelled``, and the run ends ``failed``.
SIGINT or SIGTERM to the runner cancels the same way and ends the run ``cancelled``.

The runner chooses no service: a face hands it quota's implementations of the seams
(``shipyard run``: :func:`shipyard.cli.runs.run_services`). With ``pools`` (a
:class:`~.executor.PoolAdmission`, quota's :class:`~shipyard.quota.admission.QuotaAdmission`) a
run goes to the pool it names or declares (``pool=``, ``Pipeline(pool=…)``, or
``settings.quota.default_pool`` once declared — see :mod:`.reservation`) and each step attempt
takes a grant there; with ``reserve=True`` one grant holds the DAG's peak demand from before the
first step to the end. ``enforcer`` (quota's :class:`~shipyard.quota.enforce.QuotaEnforcer`:
memory watchdog, CPU affinity, thread pools) limits every step, with or without a pool: a pool
decides admission, not whether the declared limits apply. When the run ends, each of
``on_finished`` (monitoring's judgement of the run, wired in by the face) is called with the
workspace and the run id; none can fail the run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from shipyard.errors import InvalidInput
from shipyard.pipelines import records, reservation
from shipyard.pipelines.driving import RunDriver, RunListener, RunResult, RunSetup, StepView
from shipyard.pipelines.dsl import Pipeline
from shipyard.pipelines.executor import (
    Admission,
    Enforcer,
    Executor,
    LocalAdmission,
    NoEnforcement,
    PoolAdmission,
)
from shipyard.pipelines.graph import Graph
from shipyard.workspace import Workspace

__all__ = ["RunResult", "Runner", "StepView"]


class Runner:
    """Runs pipelines in a workspace.

    ``executor`` defaults to :class:`~.local.LocalExecutor`. ``admission``, when given, admits
    every step (``pool`` is then passed to it as is); else a run in a pool of ``pools`` takes its
    grants there, and a run without a pool is admitted by this machine's size
    (:class:`~.executor.LocalAdmission`). ``enforcer`` defaults to
    :class:`~.executor.NoEnforcement`. ``reserve`` takes one grant for the DAG's peak demand
    before the first step (it needs a pool). ``on_change(views)`` is called from the calling
    thread whenever a step changes state and at least every ``tick_s`` while the run goes;
    ``on_finished`` listeners are called with ``(workspace, run_id)`` once each run has ended.
    The runner closes what it was handed (the executor, ``pools``) when it is closed.
    """

    def __init__(
        self,
        workspace: Workspace,
        executor: Executor | None = None,
        admission: Admission | None = None,
        enforcer: Enforcer | None = None,
        *,
        pools: PoolAdmission | None = None,
        pool: str | None = None,
        priority: int = 0,
        reserve: bool = False,
        kill_grace_s: float = 3.0,
        sample_interval_s: float = 0.1,
        tick_s: float = 0.25,
        on_change: Callable[[dict[str, StepView]], None] | None = None,
        on_finished: Sequence[RunListener] = (),
    ) -> None:
        if executor is None:
            from shipyard.pipelines.local import LocalExecutor

            executor = LocalExecutor()
        self.workspace = workspace
        self.executor = executor
        self.admission: Admission | None = admission
        self.enforcer: Enforcer = enforcer or NoEnforcement()
        self.pools = pools
        self._local = LocalAdmission()
        self.pool = pool
        self.priority = priority
        self.reserve = reserve
        self.kill_grace_s = kill_grace_s
        self.sample_interval_s = sample_interval_s
        self.tick_s = tick_s
        self.on_change = on_change
        self.on_finished = tuple(on_finished)

    def close(self) -> None:
        """Release the executor (its warm processes) and the pools' admission."""
        self.executor.close()
        if self.pools is not None:
            self.pools.close()

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
        if self.admission is not None:
            pool = self.pool
        else:
            pool = reservation.resolve_pool(ws, pipeline, self.pool, self.pools).name
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
        admission, reserved = self._admission(pool, pipeline, graph, new.run_id)
        setup = RunSetup(
            workspace=ws,
            executor=self.executor,
            admission=admission,
            enforcer=self.enforcer,
            reservation=reserved,
            pool=pool,
            priority=self.priority,
            kill_grace_s=self.kill_grace_s,
            sample_interval_s=self.sample_interval_s,
            tick_s=self.tick_s,
            on_change=self.on_change,
            on_finished=self.on_finished,
        )
        run = RunDriver(setup, Path(file).resolve(), pipeline, graph, new)
        try:
            return run.go()
        finally:
            run.close()

    def _admission(
        self, pool: str | None, pipeline: Pipeline, graph: Graph, run_id: str
    ) -> tuple[Admission, reservation.ReservedAdmission | None]:
        """Who admits the run's steps, and (with ``reserve``) the reservation they go into once
        it is open."""
        if self.admission is not None:
            return self.admission, None
        if pool is None or self.pools is None:
            return self._local, None
        if not self.reserve:
            return self.pools, None
        demand = reservation.peak_demand(graph)
        reserved = reservation.ReservedAdmission(
            self.pools, pool, pipeline.name, run_id, demand, self.priority
        )
        return self.pools, reserved
