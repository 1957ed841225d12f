"""``shipyard quota plan``: is there enough quota to run all my pipelines?

For each pool and resource, over one week from ``start``, the plan counts what is scheduled and
what already runs:

* **scheduled**: every firing of every scheduled pipeline (cron, via ``croniter``) occupies its
  peak demand for its estimated run time (:mod:`shipyard.quota.estimate`): per resource, the
  larger of the estimated need and what its steps ask for, since admission leases what a step
  asks for whatever it was measured to use (a step that asks for 2 CPUs and was measured at 1 on
  a busy machine still takes 2 when it runs);
* **running**: every lease held now by a run (a step's lease, or a run's ``--reserve``
  reservation) occupies its resources from now until its expected end: when it was granted plus
  the p90 run time of that step (of the pipeline, for a reservation) from history; a lease past
  that, or with no history, is counted for at least :data:`MIN_RUN_S` (no history:
  :data:`UNKNOWN_RUN_S`) from now, and a note says so;
* **reserved**: standing reservations (``quota serving --reserve``: the servers a model's QPS
  estimate needs) occupy theirs all week;
* **serving and other standing leases**: a lease held by no run (a model server's
  ``serve --pool`` lease, or any other holder) has no expected end and is counted all week.
  A live server's lease that serves a model with a reservation in the same pool is part of that
  reservation: only what the model's live leases hold *beyond* it is added (the larger of the
  two counts, never their sum).

A sweep over the end points of the scheduled and running intervals gives the peak concurrent
demand and the pipelines at that instant (the ones that collide). Experiment headroom
(``settings.quota.experiment_headroom`` × everything counted at the peak) is a line of its own.
Verdict per pool and resource: reserved + serving + running + scheduled + headroom ≤ capacity.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from croniter import croniter
from sqlalchemy import select

from shipyard.errors import InvalidInput, NotFound
from shipyard.pipelines.reservation import RESERVATION_STEP
from shipyard.quota.estimate import PipelineEstimate, estimate_pipeline
from shipyard.quota.pools import Pool, list_pools
from shipyard.quota.resources import add
from shipyard.quota.views import LeaseView
from shipyard.statuses import LeaseStatus
from shipyard.store import Store
from shipyard.store.quota import QuotaLease, QuotaReservation
from shipyard.store.tables import PipelineRecord

WEEK_S = 7 * 24 * 3600.0
MIN_RUN_S = 60.0
UNKNOWN_RUN_S = 3600.0
SERVING_RESERVATION_PREFIX = "serving:"  # how `quota serving --reserve` names its reservation


@dataclass(frozen=True)
class ScheduledDemand:
    pipeline: str
    pool: str
    schedule: str  # cron expression
    demand: dict[str, float]
    duration_s: float
    basis: str = ""


@dataclass(frozen=True)
class RunningDemand:
    """A lease a run holds now, until ``ends_at`` (its expected end)."""

    pipeline: str
    pool: str
    demand: dict[str, float]
    ends_at: float
    basis: str = ""


@dataclass(frozen=True)
class StandingLease:
    """A lease held by no run (a model server's, or any other holder's): counted all week."""

    holder: str
    pool: str
    demand: dict[str, float]
    basis: str = ""


@dataclass(frozen=True)
class LiveServer:
    """A live model server's lease and the models it serves, as the serving wing records them
    (a face hands these in: quota does not read serving's records)."""

    lease_id: str
    models: tuple[str, ...]


@dataclass(frozen=True)
class PlanLine:
    pool: str
    resource: str
    capacity: float
    reserved: float  # standing reservations (the servers a model's QPS estimate needs)
    scheduled_peak: float  # scheduled pipelines at the peak instant
    headroom: float
    peak_at: float | None
    colliding: list[str]
    serving: float = 0.0  # live serving and other standing leases, beyond their reservation
    running: float = 0.0  # leases of runs in progress, at the peak instant
    holders: list[str] = field(default_factory=list)  # who holds `serving`

    @property
    def total(self) -> float:
        return self.reserved + self.serving + self.running + self.scheduled_peak + self.headroom

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
    running: Sequence[RunningDemand] = (),
    standing: Sequence[StandingLease] = (),
) -> Plan:
    """The pure planning arithmetic (see the module docstring)."""
    end = start + WEEK_S
    plan = Plan(start, [])
    by_pool = {p.name: p for p in pools}
    for d in demands:
        if d.pool not in by_pool:
            plan.notes.append(f"{d.pipeline}: pool {d.pool!r} is not declared; not planned")
    for pool in pools:
        # (start, end, who, demand, is it running now)
        intervals: list[tuple[float, float, str, dict[str, float], bool]] = []
        for d in demands:
            if d.pool == pool.name:
                length = max(d.duration_s, MIN_RUN_S)  # a run with no recorded time still runs
                intervals += [
                    (t, t + length, d.pipeline, d.demand, False)
                    for t in firings(d.schedule, start, end)
                ]
        for r in running:
            if r.pool == pool.name:
                intervals.append((start, max(r.ends_at, start), r.pipeline, r.demand, True))
        held = [h for h in standing if h.pool == pool.name]
        reserved = reservations.get(pool.name, {})
        for resource, capacity in sorted(pool.capacity.items()):
            edges = sorted(
                [(a, 1, i) for i, (a, *_rest) in enumerate(intervals)]
                + [(b, 0, i) for i, (_a, b, *_rest) in enumerate(intervals)]
            )  # at the same instant an end (0) comes before a start (1)
            active: set[int] = set()
            peak, peak_at, colliding = 0.0, None, []
            scheduled_at_peak = running_at_peak = 0.0
            for t, kind, i in edges:
                if kind:
                    active.add(i)
                    now_running = sum(
                        intervals[j][3].get(resource, 0.0) for j in active if intervals[j][4]
                    )
                    now_scheduled = sum(
                        intervals[j][3].get(resource, 0.0) for j in active if not intervals[j][4]
                    )
                    if now_running + now_scheduled > peak + 1e-12:
                        peak, peak_at = now_running + now_scheduled, t
                        scheduled_at_peak, running_at_peak = now_scheduled, now_running
                        colliding = sorted(
                            {
                                intervals[j][2] + (" (running)" if intervals[j][4] else "")
                                for j in active
                                if intervals[j][3].get(resource, 0.0) > 0
                            }
                        )
                else:
                    active.discard(i)
            base = reserved.get(resource, 0.0)
            serving = sum(h.demand.get(resource, 0.0) for h in held)
            plan.lines.append(
                PlanLine(
                    pool.name,
                    resource,
                    capacity,
                    base,
                    scheduled_at_peak,
                    headroom_fraction * (base + serving + peak),
                    peak_at,
                    colliding,
                    serving,
                    running_at_peak,
                    sorted({h.holder for h in held if h.demand.get(resource, 0.0) > 0}),
                )
            )
    return plan


def _model_of(reservation: str) -> str | None:
    """The model a serving reservation is for (``serving:churn@champion`` → ``churn``)."""
    if not reservation.startswith(SERVING_RESERVATION_PREFIX):
        return None
    return reservation[len(SERVING_RESERVATION_PREFIX) :].partition("@")[0]


def standing_beyond_reservations(
    leases: Iterable[LeaseView],
    servers: dict[str, tuple[str, ...]],
    reservations: dict[tuple[str, str], dict[str, float]],
) -> list[StandingLease]:
    """The standing leases as the plan counts them: a live server's lease whose model has a
    reservation in its pool counts only for what the model's live leases hold beyond that
    reservation (see the module docstring); every other standing lease counts whole."""
    out: list[StandingLease] = []
    covered: dict[tuple[str, str], tuple[list[str], dict[str, float]]] = {}
    reserved_models = {
        (pool, model): name
        for (pool, name) in reservations
        if (model := _model_of(name)) is not None
    }
    for lease in leases:
        amounts = dict(lease.resources)
        models = servers.get(lease.id, ())
        key = next(((lease.pool, m) for m in models if (lease.pool, m) in reserved_models), None)
        who = lease.pipeline + (f" ({', '.join(models)})" if models else "")
        if key is None:
            basis = "live model server" if models else "held by no run: counted all week"
            out.append(StandingLease(who, lease.pool, amounts, basis))
            continue
        names, total = covered.setdefault(key, ([], {}))
        names.append(who)
        covered[key] = (names, add(total, amounts))
    for (pool, model), (names, live) in sorted(covered.items()):
        reserved = reservations[(pool, reserved_models[(pool, model)])]
        beyond = {r: v - reserved.get(r, 0.0) for r, v in live.items()}
        beyond = {r: v for r, v in beyond.items() if v > 1e-9}
        if beyond:
            out.append(
                StandingLease(", ".join(names), pool, beyond, f"beyond the reservation for {model}")
            )
    return out


def plan_from_store(
    store: Store,
    *,
    headroom_fraction: float,
    default_pool: str,
    start: float,
    servers: Sequence[LiveServer] = (),
) -> Plan:
    """Build the inputs from the store (pipelines with a schedule and their estimates, the
    leases held now, the reservations) and plan the week. ``servers``: the live model servers
    and what they serve, so that their leases are matched to their models' reservations."""
    pools = list_pools(store)
    with store.session(readonly=True) as s:
        scheduled = select(PipelineRecord).where(PipelineRecord.schedule.is_not(None))
        records = list(s.scalars(scheduled))
        by_name: dict[tuple[str, str], dict[str, float]] = {}
        for r in s.scalars(select(QuotaReservation)):
            by_name[(r.pool, r.name)] = {k: float(v) for k, v in r.resources.items()}
        held = [
            LeaseView.of(row)
            for row in s.scalars(
                select(QuotaLease)
                .where(QuotaLease.status == LeaseStatus.HELD)
                .order_by(QuotaLease.granted_at, QuotaLease.id)
            )
        ]
    reservations: dict[str, dict[str, float]] = {}
    for (pool, _name), amounts in by_name.items():
        reservations[pool] = add(reservations.get(pool, {}), amounts)
    notes: list[str] = []
    estimates: dict[str, PipelineEstimate | None] = {}

    def history(pipeline: str) -> PipelineEstimate | None:
        if pipeline not in estimates:
            try:
                estimates[pipeline] = estimate_pipeline(store, pipeline)
            except NotFound:
                estimates[pipeline] = None
        return estimates[pipeline]

    running: list[RunningDemand] = []
    for lease in held:
        if not lease.run_id:
            continue
        amounts = dict(lease.resources)
        est = history(lease.pipeline)
        granted = lease.granted_at if lease.granted_at is not None else start
        if est is None:
            ends = start + UNKNOWN_RUN_S
            notes.append(
                f"{lease.pipeline} runs now with no history: its lease is counted for "
                f"{UNKNOWN_RUN_S / 3600:g} h from now"
            )
        else:
            step = next((e for e in est.steps if e.step == lease.step), None)
            expected = step.duration_s if step is not None else est.duration_s
            ends = max(granted + expected, start + MIN_RUN_S)
            if lease.step != RESERVATION_STEP and step is None:
                notes.append(f"{lease.pipeline}: step {lease.step!r} has no history of its own")
        running.append(RunningDemand(lease.pipeline, lease.pool, amounts, ends))
    live = {srv.lease_id: srv.models for srv in servers}
    standing = standing_beyond_reservations(
        [lease for lease in held if not lease.run_id], live, by_name
    )
    demands: list[ScheduledDemand] = []
    for rec in records:
        assert rec.schedule is not None
        est = history(rec.name)
        if est is None:
            notes.append(f"{rec.name}: no run history yet, so no estimate; not planned")
            continue
        pool = str((rec.spec or {}).get("pool") or default_pool)
        basis = f"{est.runs} runs of {est.based_on}"
        demands.append(
            ScheduledDemand(rec.name, pool, rec.schedule, est.lease_peak(), est.duration_s, basis)
        )
    plan = plan_week(
        pools,
        demands,
        reservations,
        headroom_fraction=headroom_fraction,
        start=start,
        running=running,
        standing=standing,
    )
    plan.notes = notes + plan.notes
    return plan
