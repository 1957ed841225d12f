"""Quota usage as metric series: reserved vs used, usage rate and time to exhaustion.

:func:`record_usage` (called by the daemon every tick, or by ``shipyard quota status``) writes
:class:`~shipyard.store.tables.MetricPoint` rows with Prometheus-style names:

==============================================  ===========================================
``shipyard_quota_capacity{pool,resource}``      what the pool holds
``shipyard_quota_reserved{pool,resource,pipeline}``  held by the pipeline's leases
``shipyard_quota_used{pool,resource,pipeline}``      measured by its steps (heartbeats)
``shipyard_quota_waiting{pool,pipeline}``            requests in the queue
``shipyard_quota_pool_reserved{pool,resource}``      held by every lease of the pool
``shipyard_quota_used_fraction{pool,resource}``      pool_reserved / capacity (0 to 1)
``shipyard_quota_usage_rate{pool,resource}``         d(reserved)/dt, units per second
``shipyard_quota_time_to_exhaustion_seconds{pool,resource}``  (capacity − reserved) / rate
``shipyard_quota_hog_wait_seconds{pool,pipeline,holds,waiting}``  see below
==============================================  ===========================================

**The hog named.** In a shared pool, a pipeline that holds more than its guaranteed share of a
resource while other pipelines' requests wait for capacity (within their own caps) is a *hog*:
its ``shipyard_quota_hog_wait_seconds`` is how long the longest of those requests has waited,
``holds`` says what it holds against its share and ``waiting`` who waits; 0 (with both empty)
when it is not a hog. The default rule ``QuotaHog`` reads it (``holds`` and ``waiting`` describe
the alert, they are not its identity: :attr:`shipyard.alerting.rules.Rule.info_labels`).

The rate is the least-squares slope of the pool's total reservation over the last
``window_s`` (the burn rate); time to exhaustion is written only while that rate is positive and
the reservation has risen at least three times in the window and stands at its highest (one lease
taken is a step, not a trend; a pool being drained, or back down after a peak, is not about to
run out, whatever the slope of the window says).
"""

from __future__ import annotations

import itertools
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select

from shipyard.clock import SYSTEM_CLOCK, Clock
from shipyard.quantities import format_amount
from shipyard.quota.pools import Pool, list_pools
from shipyard.quota.resources import EPSILON, add, first_excess
from shipyard.statuses import LEASE_ACTIVE, LeaseStatus
from shipyard.store import Store
from shipyard.store.quota import QuotaLease
from shipyard.store.tables import MetricPoint, labels_key

RESERVED = "shipyard_quota_reserved"
USED = "shipyard_quota_used"
CAPACITY = "shipyard_quota_capacity"
WAITING = "shipyard_quota_waiting"
RATE = "shipyard_quota_usage_rate"
POOL_RESERVED = "shipyard_quota_pool_reserved"
USED_FRACTION = "shipyard_quota_used_fraction"
HOG_WAIT = "shipyard_quota_hog_wait_seconds"
TIME_TO_EXHAUSTION = "shipyard_quota_time_to_exhaustion_seconds"
MIN_RISES = 3
"""Increases of the reservation within the window before a time to exhaustion is forecast."""


@dataclass(frozen=True)
class Exhaustion:
    pool: str
    resource: str
    reserved: float
    capacity: float
    rate_per_s: float
    seconds: float | None


def burn_rate(times: list[float], values: list[float]) -> float:
    """Least-squares slope of values over times (units per second); 0 under two points."""
    if len(times) < 2 or max(times) - min(times) <= 0:
        return 0.0
    slope, _ = np.polyfit(np.asarray(times) - times[0], np.asarray(values), 1)
    return float(slope)


def hogs(
    pool: Pool,
    leases: list[QuotaLease],
    now: float,
    also: Collection[str] = (),
) -> dict[str, tuple[dict[str, str], float]]:
    """For every pipeline holding or waiting in ``pool``: ``({"holds", "waiting"}, seconds)`` —
    what it holds beyond its share and who waits how long while it does (empty and 0 when it
    is not a hog; see the module docstring). ``also``: pipelines to report even if they hold
    and ask nothing now (those reported as hogs lately, so that their alert resolves)."""
    held: dict[str, dict[str, float]] = {}
    for lease in leases:
        if lease.status == LeaseStatus.HELD:
            amounts = {r: float(v) for r, v in lease.resources.items()}
            held[lease.pipeline] = add(held.get(lease.pipeline, {}), amounts)
    waiters: dict[str, list[float]] = {}  # pipeline -> when its requests began waiting
    for lease in leases:
        if lease.status != LeaseStatus.WAITING:
            continue
        wanted = {r: float(v) for r, v in lease.resources.items()}
        cap = pool.member(lease.pipeline).cap
        if first_excess(add(held.get(lease.pipeline, {}), wanted), cap) is None:
            waiters.setdefault(lease.pipeline, []).append(lease.requested_at)
    found: dict[str, tuple[dict[str, str], float]] = {}
    for pipeline in sorted(set(held) | set(waiters) | set(also)):
        share = pool.member(pipeline).share
        mine = held.get(pipeline, {})
        over = [r for r in sorted(mine) if mine[r] > share.get(r, 0.0) + EPSILON]
        others = {p: w for p, w in waiters.items() if p != pipeline}
        if not over or not others:
            found[pipeline] = ({"holds": "", "waiting": ""}, 0.0)
            continue
        holds = ", ".join(
            f"{r} {format_amount(r, mine[r])} of {format_amount(r, pool.capacity.get(r, 0.0))} "
            f"(share {format_amount(r, share.get(r, 0.0))})"
            for r in over
        )
        waiting = ", ".join(
            f"{p} ({len(w)} request{'s' if len(w) > 1 else ''}, {now - min(w):.0f}s)"
            for p, w in sorted(others.items())
        )
        longest = max(now - min(w) for w in others.values())
        found[pipeline] = ({"holds": holds, "waiting": waiting}, max(longest, EPSILON))
    return found


def record_usage(
    store: Store, clock: Clock = SYSTEM_CLOCK, window_s: float = 900.0
) -> list[Exhaustion]:
    """Write one sample of every series above; return each pool/resource's exhaustion outlook."""
    now = clock.time()
    pools = list_pools(store)
    outlook: list[Exhaustion] = []
    with store.session(immediate=True) as s:
        leases = list(s.scalars(select(QuotaLease).where(QuotaLease.status.in_(LEASE_ACTIVE))))
        points: list[MetricPoint] = []

        def point(name: str, labels: dict[str, str], value: float) -> None:
            points.append(MetricPoint.of(name, labels, now, value))

        for pool in pools:
            mine = [lease for lease in leases if lease.pool == pool.name]
            pipelines = sorted({lease.pipeline for lease in mine} | set(pool.members))
            for pipeline in pipelines:
                held = [x for x in mine if x.pipeline == pipeline and x.status == LeaseStatus.HELD]
                waiting = sum(
                    1 for x in mine if x.pipeline == pipeline and x.status == LeaseStatus.WAITING
                )
                point(WAITING, {"pool": pool.name, "pipeline": pipeline}, waiting)
                for resource in pool.capacity:
                    labels = {"pool": pool.name, "resource": resource, "pipeline": pipeline}
                    point(RESERVED, labels, sum(float(x.resources.get(resource, 0)) for x in held))
                    point(USED, labels, sum(float(x.used.get(resource, 0)) for x in held))
            if pool.mode == "shared":
                lately = {
                    str(labels.get("pipeline"))
                    for labels in s.scalars(
                        select(MetricPoint.labels).where(
                            MetricPoint.name == HOG_WAIT,
                            MetricPoint.ts >= now - window_s,
                            MetricPoint.value > 0,
                        )
                    )
                    if labels.get("pool") == pool.name
                }
                for pipeline, (labels, value) in hogs(pool, mine, now, lately).items():
                    point(HOG_WAIT, {"pool": pool.name, "pipeline": pipeline} | labels, value)
            for resource, capacity in pool.capacity.items():
                labels = {"pool": pool.name, "resource": resource}
                reserved = sum(
                    float(x.resources.get(resource, 0))
                    for x in mine
                    if x.status == LeaseStatus.HELD
                )
                point(CAPACITY, labels, capacity)
                point(POOL_RESERVED, labels, reserved)
                point(USED_FRACTION, labels, reserved / capacity if capacity > 0 else 0.0)
                history = s.execute(
                    select(MetricPoint.ts, MetricPoint.value).where(
                        MetricPoint.name == POOL_RESERVED,
                        MetricPoint.labels_key == labels_key(labels),
                        MetricPoint.ts >= now - window_s,
                    )
                ).all()
                times = [float(t) for t, _ in history] + [now]
                values = [float(v) for _, v in history] + [reserved]
                rate = burn_rate(times, values)
                point(RATE, labels, rate)
                # a trend, rising to a new high: one lease taken is a step, not a trend, and
                # below the window's peak a positive slope is the past
                rises = sum(1 for a, b in itertools.pairwise(values) if b > a)
                rising = rate > 0 and reserved >= max(values) and rises >= MIN_RISES
                seconds = max(capacity - reserved, 0.0) / rate if rising else None
                if seconds is not None:
                    point(TIME_TO_EXHAUSTION, labels, seconds)
                outlook.append(Exhaustion(pool.name, resource, reserved, capacity, rate, seconds))
        s.add_all(points)
    return outlook
