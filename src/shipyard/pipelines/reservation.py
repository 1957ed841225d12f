"""How a run meets quota: which pool it runs in, and (``--reserve``) one lease for its peak.

**Pool** (:func:`resolve_pool`). The first of: the pool named on the command line
(``--pool``); ``Pipeline(pool=…)``; ``settings.quota.default_pool`` when a pool of that name has
been declared. With none, the run is admitted by this machine's size
(:class:`~shipyard.pipelines.executor.LocalAdmission`) — and limited as declared all the same.
Which pools exist is asked of the :class:`~.executor.PoolAdmission` the face handed in (quota's);
a runner handed none runs no pool, and refuses a run that names one.
A run with a pool records it for the pipeline (``PipelineRecord.spec["pool"]``, which
``shipyard quota plan`` reads), but a later run does *not* go there by itself: as a Kueue
workload names its queue and a Prefect deployment its work pool, where a run is admitted is
said by the run or the pipeline's own declaration, never inherited from history. The choice
says why it was made, and a pool recorded but not used is named in a hint.

**Peak demand** (:func:`peak_demand`). Each step gets a *level*: 0 without inputs, else one more
than the highest level of the steps it reads. The peak is, per resource, the maximum over levels
of the sum of the level's declared amounts. It covers every single step (so a reserved run can
never be refused half-way) and every set of steps that become ready together. It is not the
maximum-weight antichain of the DAG (a long chain running beside a short branch can overlap
steps of different levels); instead of reserving that larger bound, the run's steps are admitted
*inside* the reservation (:class:`ReservedAdmission`): they wait only for each other, never for
the pool, and the run never holds more than it reserved. The reservation is one grant of the
pools' admission for the whole run, renewed from a thread of its own and fenced like a step's.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from shipyard.errors import InvalidInput, NotFound, QuotaError
from shipyard.pipelines.executor import (
    HEARTBEAT_INTERVAL_S,
    Admission,
    Grant,
    LocalAdmission,
    PoolAdmission,
    StepRequest,
)
from shipyard.pipelines.graph import Graph
from shipyard.statuses import StepStatus
from shipyard.store.tables import PipelineRecord, Run, StepRun

if TYPE_CHECKING:
    from shipyard.pipelines.dsl import Pipeline
    from shipyard.store import Store
    from shipyard.workspace import Workspace

log = logging.getLogger(__name__)


def step_levels(graph: Graph) -> dict[str, int]:
    """Level of every node: 0 for a source, else 1 + the highest level of its inputs."""
    levels: dict[str, int] = {}
    for name in graph.topological():
        node = graph.nodes[name]
        levels[name] = 1 + max((levels[u] for u in node.upstream), default=-1)
    return levels


def peak_demand(graph: Graph) -> dict[str, float]:
    """Per resource, the max over DAG levels of the level's summed declared amounts (see the
    module docstring). Resources declared as 0 everywhere are left out."""
    by_level: dict[int, dict[str, float]] = {}
    for name, level in step_levels(graph).items():
        total = by_level.setdefault(level, {})
        for resource, amount in graph.nodes[name].step.resources.amounts().items():
            total[resource] = total.get(resource, 0.0) + amount
    peak: dict[str, float] = {}
    for total in by_level.values():
        for resource, amount in total.items():
            peak[resource] = max(peak.get(resource, 0.0), amount)
    return {r: v for r, v in peak.items() if v > 0}


HISTORY_RUNS = 10
"""How many of a step's latest successful attempts its expected duration is read from."""


def expected_durations(store: Store, pipeline: str, graph: Graph) -> dict[str, float]:
    """What each step of the run is expected to take, for a pool's backfill: the longest of its
    last :data:`HISTORY_RUNS` successful attempts (the longest, not the mean: a short estimate
    can delay a blocked head, a long one only backfills less), at most its declared timeout;
    else the declared timeout; steps with neither are left out (unknown). One query."""
    with store.session() as s:
        rows = s.execute(
            select(StepRun.step, StepRun.ended_at - StepRun.started_at)
            .join(Run, Run.id == StepRun.run_id)
            .where(
                Run.pipeline == pipeline,
                StepRun.step.in_(list(graph.nodes)),
                StepRun.status == StepStatus.SUCCEEDED,
                StepRun.started_at.is_not(None),
                StepRun.ended_at.is_not(None),
            )
            .order_by(StepRun.ended_at.desc())
            .limit(HISTORY_RUNS * len(graph.nodes))
        ).all()
    past: dict[str, list[float]] = {}
    for step, took in rows:
        if took is not None and took >= 0 and len(past.setdefault(step, [])) < HISTORY_RUNS:
            past[step].append(float(took))
    expected: dict[str, float] = {}
    for name, node in graph.nodes.items():
        timeout = node.step.timeout_s
        if past.get(name):
            longest = max(past[name])
            expected[name] = min(longest, timeout) if timeout is not None else longest
        elif timeout is not None:
            expected[name] = float(timeout)
    return expected


@dataclass(frozen=True)
class PoolChoice:
    """The pool a run uses (``None``: none), why, and a pool recorded by earlier runs of the
    pipeline that this run does not use."""

    name: str | None
    why: str
    recorded: str | None = None

    def describe(self) -> str:
        if self.name is not None:
            return f"pool {self.name!r} ({self.why})"
        line = f"no pool ({self.why}): admitted by this machine's size, limits as declared"
        if self.recorded is not None:
            line += (
                f"; earlier runs of this pipeline used pool {self.recorded!r}: "
                f"pass --pool {self.recorded} to run there"
            )
        return line


def resolve_pool(
    ws: Workspace, pipeline: Pipeline, explicit: str | None, pools: PoolAdmission | None
) -> PoolChoice:
    """The pool this run uses (see the module docstring), checked to exist in ``pools``.

    Raises :class:`~shipyard.errors.NotFound` when a pool is named but not declared, and
    :class:`~shipyard.errors.InvalidInput` when one is named but there are no ``pools``."""
    declared = pipeline.pool
    named, why = (explicit, "named with --pool") if explicit else (declared, "Pipeline(pool=…)")
    if named is not None:
        if pools is None:
            raise InvalidInput(
                f"pool {named!r} ({why}): this runner was given no quota pools to admit steps in"
            )
        if not pools.pool_exists(str(named)):
            raise NotFound("pool", str(named), "declare it with `shipyard quota apply pools.yaml`")
        return PoolChoice(str(named), why)
    default = ws.settings.quota.default_pool
    if pools is not None and pools.pool_exists(default):
        return PoolChoice(default, "the workspace's quota.default_pool")
    with ws.store.session() as s:
        record = s.get(PipelineRecord, pipeline.name)
        recorded = (record.spec or {}).get("pool") if record is not None else None
    return PoolChoice(None, "none named or declared", str(recorded) if recorded else None)


def record_pool(ws: Workspace, pipeline: str, pool: str) -> None:
    """Write ``PipelineRecord.spec["pool"]`` (``shipyard quota plan`` plans the pipeline there)."""
    with ws.store.session(immediate=True) as s:
        record = s.get(PipelineRecord, pipeline)
        if record is not None:
            record.spec = {**(record.spec or {}), "pool": pool}


RESERVATION_STEP = "(run reservation)"
"""The step name of a run's reservation grant (what ``quota status`` shows for it)."""


class ReservedAdmission:
    """Admission of a run's steps inside one grant that holds the run's peak demand.

    :meth:`open` takes the grant from the pools' admission (blocking until the pool grants it,
    or raising :class:`~shipyard.errors.QuotaExceeded` at once when it can never fit); a thread
    renews it while the run goes (every ``detail["renew_every_s"]``); :meth:`close` gives it
    back. Steps are admitted in-process against the reserved amounts; their grants name the
    run's grant, its pool and its latest expiry, so each step's renewal fences it with the run's.
    """

    def __init__(
        self,
        pools: Admission,
        pool: str,
        pipeline: str,
        run_id: str,
        demand: dict[str, float],
        priority: int = 0,
    ) -> None:
        self.pools = pools
        self.pool = pool
        self.pipeline = pipeline
        self.run_id = run_id
        self.demand = demand
        self.priority = priority
        self.grant: Grant | None = None
        self.expires_at: float | None = None
        self._inner = LocalAdmission(dict(demand))
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self.lost: str | None = None

    def open(self) -> Grant:
        request = StepRequest(
            pipeline=self.pipeline,
            run_id=self.run_id,
            step=RESERVATION_STEP,
            step_run_id="",
            resources=self.demand,
            pool=self.pool,
            priority=self.priority,
            preemptible=False,  # a run's reservation is not preempted: its steps would be lost
        )
        self.grant = grant = self.pools.acquire(request)
        expires_at = grant.detail.get("expires_at")
        self.expires_at = float(expires_at) if expires_at is not None else None
        every_s = float(grant.detail.get("renew_every_s") or HEARTBEAT_INTERVAL_S)
        self._beat = threading.Thread(
            target=self._heartbeats, args=(grant, every_s), daemon=True, name="reservation"
        )
        self._beat.start()
        return grant

    def _heartbeats(self, grant: Grant, every_s: float) -> None:
        while not self._stop.wait(every_s):
            try:
                expires_at = self.pools.heartbeat(grant)
            except QuotaError as exc:  # lost: every step's renewal now fences its step
                self.lost = str(exc)
                log.warning("reservation %s lost: %s", grant.lease_id, exc)
                return
            except Exception as exc:  # a store outage: the fencing deadline decides
                log.warning("reservation %s: heartbeat failed: %s", grant.lease_id, exc)
                continue
            if expires_at is not None:
                self.expires_at = expires_at

    def close(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        if self.grant is not None:
            self.pools.release(self.grant)
            self.grant = None

    def acquire(self, request: StepRequest) -> Grant:
        inner = self._inner.acquire(request)
        grant = self.grant
        lease_id = grant.lease_id if grant is not None else inner.lease_id
        detail: dict[str, Any] = {"pool": self.pool, "reservation": lease_id}
        if grant is not None:
            detail = {**grant.detail, "expires_at": self.expires_at} | detail
        return Grant(request, lease_id, inner.granted, detail | {"local": inner.lease_id})

    def heartbeat(self, grant: Grant) -> float | None:
        """The reservation's expiry (its own thread renews it); :class:`QuotaError` once lost."""
        if self.lost is not None:
            raise QuotaError(f"the run's reservation was lost: {self.lost}")
        return self.expires_at if self.grant is not None else None

    def release(self, grant: Grant) -> None:
        with contextlib.suppress(Exception):
            self._inner.release(grant)
