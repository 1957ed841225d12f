"""``shipyard quota plan``: is there enough quota to run all my pipelines?

For each pool and resource, over one week from ``start``: every firing of every scheduled
pipeline (cron, via ``croniter``) occupies its estimated peak demand for its estimated run time
(:mod:`shipyard.quota.estimate`); standing reservations (serving replicas) occupy theirs all
week. A sweep over the interval end points gives the peak concurrent demand and the pipelines
running at that instant (the ones that collide). Experiment headroom
(``settings.quota.experiment_headroom`` × the peak) is added as a line of its own. Verdict per
pool and resource: peak + headroom ≤ capacity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from croniter import croniter
from sqlalchemy import select

from shipyard.errors import InvalidInput, NotFound
from shipyard.quota.estimate import estimate_pipeline
from shipyard.quota.pools import Pool, list_pools
from shipyard.store import Store
from shipyard.store.quota import QuotaReservation
from shipyard.store.tables import PipelineRecord

WEEK_S = 7 * 24 * 3600.0
MIN_RUN_S = 60.0


@dataclass(frozen=True)
class ScheduledDemand:
    pipeline: str
    pool: str
    schedule: str  # cron expression
    demand: dict[str, float]
    duration_s: float
    basis: str = ""


@dataclass(frozen=True)
class PlanLine:
    pool: str
    resource: str
    capacity: float
    reserved: float  # standing reservations (serving)
    scheduled_peak: float  # pipelines at the peak instant
    headroom: float
    peak_at: float | None
    colliding: list[str]

    @property
    def total(self) -> float:
        return self.reserved + self.scheduled_peak + self.headroom

    @property
    def fits(self) -> bool:
        return self.total <= self.capacity + 1e-9


@dataclass
class Plan:
    start: float
    lines: list[PlanLine]
    notes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return all(line.fits for line in self.lines)


def firings(schedule: str, start: float, end: float) -> list[float]:
    """Start times of a cron schedule in [start, end)."""
    if not croniter.is_valid(schedule):
        raise InvalidInput(f"{schedule!r} is not a cron expression (e.g. '0 2 * * *')")
    it = croniter(schedule, datetime.fromtimestamp(start, tz=UTC) - _ONE_SECOND)
    out: list[float] = []
    while True:
        t = float(it.get_next(float))
        if t >= end:
            return out
        if t >= start:
            out.append(t)


_ONE_SECOND = datetime.fromtimestamp(1, tz=UTC) - datetime.fromtimestamp(0, tz=UTC)


def plan_week(
    pools: list[Pool],
    demands: list[ScheduledDemand],
    reservations: dict[str, dict[str, float]],
    *,
    headroom_fraction: float,
    start: float,
) -> Plan:
    """The pure planning arithmetic (see the module docstring)."""
    end = start + WEEK_S
    plan = Plan(start, [])
    by_pool = {p.name: p for p in pools}
    for d in demands:
        if d.pool not in by_pool:
            plan.notes.append(f"{d.pipeline}: pool {d.pool!r} is not declared; not planned")
    for pool in pools:
        intervals: list[tuple[float, float, ScheduledDemand]] = []
        for d in demands:
            if d.pool == pool.name:
                length = max(d.duration_s, MIN_RUN_S)  # a run with no recorded time still runs
                intervals += [(t, t + length, d) for t in firings(d.schedule, start, end)]
        reserved = reservations.get(pool.name, {})
        for resource, capacity in sorted(pool.capacity.items()):
            edges = sorted(
                [(a, 1, i) for i, (a, _b, _d) in enumerate(intervals)]
                + [(b, 0, i) for i, (_a, b, _d) in enumerate(intervals)]
            )  # at the same instant an end (0) comes before a start (1)
            active: set[int] = set()
            peak, peak_at, colliding = 0.0, None, []
            for t, kind, i in edges:
                if kind:
                    active.add(i)
                    level = sum(intervals[j][2].demand.get(resource, 0.0) for j in active)
                    if level > peak + 1e-12:
                        peak, peak_at = level, t
                        colliding = sorted({intervals[j][2].pipeline for j in active})
                else:
                    active.discard(i)
            base = reserved.get(resource, 0.0)
            plan.lines.append(
                PlanLine(
                    pool.name,
                    resource,
                    capacity,
                    base,
                    peak,
                    headroom_fraction * (base + peak),
                    peak_at,
                    colliding,
                )
            )
    return plan


def plan_from_store(
    store: Store, *, headroom_fraction: float, default_pool: str, start: float
) -> Plan:
    """Build the inputs from the store (pipelines with a schedule, their estimates, serving
    reservations) and plan the week."""
    pools = list_pools(store)
    with store.session() as s:
        scheduled = select(PipelineRecord).where(PipelineRecord.schedule.is_not(None))
        records = list(s.scalars(scheduled))
        reservations: dict[str, dict[str, float]] = {}
        for r in s.scalars(select(QuotaReservation)):
            pool_res = reservations.setdefault(r.pool, {})
            for k, v in r.resources.items():
                pool_res[k] = pool_res.get(k, 0.0) + float(v)
    demands: list[ScheduledDemand] = []
    notes: list[str] = []
    for rec in records:
        assert rec.schedule is not None
        try:
            est = estimate_pipeline(store, rec.name)
        except NotFound:
            notes.append(f"{rec.name}: no run history yet, so no estimate; not planned")
            continue
        pool = str((rec.spec or {}).get("pool") or default_pool)
        basis = f"{est.runs} runs of {est.based_on}"
        demands.append(
            ScheduledDemand(rec.name, pool, rec.schedule, est.peak, est.duration_s, basis)
        )
    plan = plan_week(pools, demands, reservations, headroom_fraction=headroom_fraction, start=start)
    plan.notes = notes + plan.notes
    return plan
