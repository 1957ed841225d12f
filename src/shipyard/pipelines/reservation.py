"""How a run meets quota: which pool it runs in, and (``--reserve``) one lease for its peak.

**Pool** (:func:`resolve_pool`). The first of: the pool named on the command line
(``--pool``); ``Pipeline(pool=…)``; ``settings.quota.default_pool`` when a pool of that name has
been declared. With none, the run is admitted by this machine's size
(:class:`~shipyard.pipelines.executor.LocalAdmission`) — and limited as declared all the same.
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
the pool, and the run never holds more than it reserved.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shipyard.errors import QuotaError
from shipyard.pipelines.executor import Grant, LocalAdmission, StepRequest
from shipyard.pipelines.graph import Graph

if TYPE_CHECKING:
    from shipyard.pipelines.dsl import Pipeline
    from shipyard.quota.admission import Lease, LeaseManager
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


def resolve_pool(ws: Workspace, pipeline: Pipeline, explicit: str | None) -> PoolChoice:
    """The pool this run uses (see the module docstring), checked to exist.

    Raises :class:`~shipyard.errors.NotFound` when a pool is named but not declared."""
    from shipyard.errors import NotFound
    from shipyard.quota.admission import pool_exists
    from shipyard.store.tables import PipelineRecord

    declared = pipeline.pool
    named, why = (explicit, "named with --pool") if explicit else (declared, "Pipeline(pool=…)")
    if named is not None:
        if not pool_exists(ws.store, str(named)):
            raise NotFound("pool", str(named), "declare it with `shipyard quota apply pools.yaml`")
        return PoolChoice(str(named), why)
    default = ws.settings.quota.default_pool
    if pool_exists(ws.store, default):
        return PoolChoice(default, "the workspace's quota.default_pool")
    with ws.store.session() as s:
        record = s.get(PipelineRecord, pipeline.name)
        recorded = (record.spec or {}).get("pool") if record is not None else None
    return PoolChoice(None, "none named or declared", str(recorded) if recorded else None)


def record_pool(ws: Workspace, pipeline: str, pool: str) -> None:
    """Write ``PipelineRecord.spec["pool"]`` (``shipyard quota plan`` plans the pipeline there)."""
    from shipyard.store.tables import PipelineRecord

    with ws.store.session(immediate=True) as s:
        record = s.get(PipelineRecord, pipeline)
        if record is not None:
            record.spec = {**(record.spec or {}), "pool": pool}


class ReservedAdmission:
    """Admission of a run's steps inside one lease that holds the run's peak demand.

    :meth:`open` takes the lease (blocking until the pool grants it, or raising
    :class:`~shipyard.errors.QuotaExceeded` at once when it can never fit); a thread heartbeats
    it while the run goes; :meth:`close` gives it back. Steps are admitted in-process against
    the reserved amounts; their grants name the run's lease and pool.
    """

    def __init__(
        self,
        leases: LeaseManager,
        pool: str,
        pipeline: str,
        run_id: str,
        demand: dict[str, float],
        priority: int = 0,
    ) -> None:
        self.leases = leases
        self.pool = pool
        self.pipeline = pipeline
        self.run_id = run_id
        self.demand = demand
        self.priority = priority
        self.lease: Lease | None = None
        self._inner = LocalAdmission(dict(demand))
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self.lost: str | None = None

    def open(self) -> Lease:
        from shipyard.quota.admission import LeaseRequest

        self.lease = self.leases.acquire(
            LeaseRequest(
                self.pipeline,
                self.demand,
                pool=self.pool,
                run_id=self.run_id,
                step="(run reservation)",
                priority=self.priority,
            )
        )
        self._beat = threading.Thread(target=self._heartbeats, daemon=True, name="reservation")
        self._beat.start()
        return self.lease

    def _heartbeats(self) -> None:
        from shipyard.quota.admission import renew_every_s

        while not self._stop.wait(renew_every_s(self.leases.lease_ttl_s)):
            lease = self.lease
            if lease is None:
                return
            try:
                self.lease = self.leases.heartbeat(lease)
            except QuotaError as exc:  # lost: every step's renewal now fences its step
                self.lost = str(exc)
                log.warning("reservation %s lost: %s", lease.lease_id, exc)
                return
            except Exception as exc:  # a store outage: the fencing deadline decides
                log.warning("reservation %s: heartbeat failed: %s", lease.lease_id, exc)

    def close(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        if self.lease is not None:
            self.leases.release(self.lease)
            self.lease = None

    def acquire(self, request: StepRequest) -> Grant:
        from shipyard.quota.admission import lease_detail

        inner = self._inner.acquire(request)
        lease = self.lease
        lease_id = lease.lease_id if lease is not None else inner.lease_id
        detail: dict[str, Any] = {"pool": self.pool, "reservation": lease_id}
        if lease is not None:
            detail = lease_detail(lease, self.leases) | detail
        return Grant(request, lease_id, inner.granted, detail | {"local": inner.lease_id})

    def heartbeat(self, grant: Grant) -> float | None:
        """The reservation's expiry (its own thread renews it); :class:`QuotaError` once lost."""
        if self.lost is not None:
            raise QuotaError(f"the run's reservation was lost: {self.lost}")
        lease = self.lease
        return lease.expires_at if lease is not None else None

    def release(self, grant: Grant) -> None:
        with contextlib.suppress(Exception):
            self._inner.release(grant)


class PerAttemptQuota:
    """Quota admission for a run's step threads: one
    :class:`~shipyard.quota.admission.QuotaAdmission` per attempt, closed when it is released.

    A :class:`~shipyard.quota.admission.LeaseManager` keeps one SQLite connection and one
    ``flock`` descriptor for its admission transactions; threads sharing it would run two
    transactions on one connection (``cannot start a transaction within a transaction``) and
    would not exclude each other (``flock`` belongs to the open file, not the thread). One per
    attempt gives each step thread its own connection and lock file description, so the
    attempts queue on the lock like separate processes do.
    """

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self._by_lease: dict[str, Any] = {}
        self._lock = threading.Lock()

    def acquire(self, request: StepRequest) -> Grant:
        from shipyard.quota.admission import QuotaAdmission

        quota = QuotaAdmission.for_workspace(self.ws.store, self.ws.settings, self.ws.clock)
        try:
            grant = quota.acquire(request)
        except BaseException:
            quota.leases.close()
            raise
        with self._lock:
            self._by_lease[grant.lease_id] = quota
        return grant

    def heartbeat(self, grant: Grant) -> float | None:
        with self._lock:
            quota = self._by_lease.get(grant.lease_id)
        return quota.heartbeat(grant) if quota is not None else None

    def release(self, grant: Grant) -> None:
        with self._lock:
            quota = self._by_lease.pop(grant.lease_id, None)
        if quota is not None:
            try:
                quota.release(grant)
            finally:
                quota.leases.close()
