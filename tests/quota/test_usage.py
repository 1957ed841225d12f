"""Usage series: reserved vs used per pipeline, burn rate and time to exhaustion."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from shipyard.alerting.config import load_config
from shipyard.alerting.cycle import evaluate
from shipyard.clock import FakeClock
from shipyard.quota.admission import LeaseManager, LeaseRequest
from shipyard.quota.pools import MemberSpec, PoolSpec, apply_pools, resolve
from shipyard.quota.usage import (
    RESERVED,
    TIME_TO_EXHAUSTION,
    USED,
    USED_FRACTION,
    burn_rate,
    record_usage,
)
from shipyard.store import Store
from shipyard.store.alerting import AlertRecord
from shipyard.store.tables import MetricPoint


def test_reserved_used_and_time_to_exhaustion(store: Store) -> None:
    clock = FakeClock()
    spec = PoolSpec(
        name="p", capacity={"cpu": 10}, members=[MemberSpec(pipeline="etl", share=1.0, cap=1.0)]
    )
    apply_pools(store, [resolve(spec, 0.5)])
    leases = LeaseManager(store, clock=clock, default_pool="p", lease_ttl_s=3600)
    for _minute in range(4):  # one more CPU reserved every minute
        lease = leases.acquire(LeaseRequest("etl", {"cpu": 1}))
        leases.heartbeat(lease, used={"cpu": 0.5})
        outlook = record_usage(store, clock)
        clock.advance(60)
    (cpu,) = outlook
    assert cpu.reserved == 4 and cpu.rate_per_s == pytest.approx(1 / 60)
    assert cpu.seconds == pytest.approx(6 * 60)  # 6 CPUs left at 1 per minute
    with store.session() as s:
        last = {
            p.name: p
            for p in s.scalars(select(MetricPoint).order_by(MetricPoint.ts, MetricPoint.id))
            if p.labels.get("pipeline") in (None, "etl")
        }
    assert last[RESERVED].value == 4 and last[RESERVED].labels["pipeline"] == "etl"
    assert last[USED].value == 2.0
    assert last[TIME_TO_EXHAUSTION].value == pytest.approx(360)

    # after the peak, one lease given back: the window's slope is still positive, but a pool
    # below its peak is not about to run out
    leases.release(lease)
    (cpu,) = record_usage(store, clock)
    assert cpu.reserved == 3 and cpu.rate_per_s > 0 and cpu.seconds is None
    leases.close()


def test_one_lease_taken_is_a_step_not_a_trend(store: Store) -> None:
    clock = FakeClock()
    spec = PoolSpec(name="p", capacity={"cpu": 10}, members=[MemberSpec(pipeline="etl")])
    apply_pools(store, [resolve(spec, 0.5)])
    leases = LeaseManager(store, clock=clock, default_pool="p", lease_ttl_s=3600)
    for minute in range(4):
        if minute == 1:
            leases.acquire(LeaseRequest("etl", {"cpu": 4}))
        (cpu,) = record_usage(store, clock)
        clock.advance(60)
    assert cpu.reserved == 4 and cpu.rate_per_s > 0 and cpu.seconds is None
    leases.close()


def test_burn_rate_is_the_least_squares_slope() -> None:
    assert burn_rate([0, 1, 2, 3], [1, 3, 5, 7]) == pytest.approx(2)
    assert burn_rate([5], [1]) == 0


def test_a_filling_pool_fires_the_default_quota_usage_alert(store: Store, tmp_path: Path) -> None:
    """QuotaUsageHigh reads shipyard_quota_used_fraction: record_usage must write it (it once
    wrote nothing under that name, so the default quota alerts could never fire)."""
    clock = FakeClock()
    spec = PoolSpec(
        name="p", capacity={"cpu": 10}, members=[MemberSpec(pipeline="etl", share=1.0, cap=1.0)]
    )
    apply_pools(store, [resolve(spec, 0.5)])
    leases = LeaseManager(store, clock=clock, default_pool="p", lease_ttl_s=3600)
    cfg = load_config(tmp_path)
    held = [leases.acquire(LeaseRequest("etl", {"cpu": 1})) for _ in range(5)]
    firing: set[str] = set()
    for minute in range(14):
        if minute == 1:  # the pool fills to 95 %
            held += [leases.acquire(LeaseRequest("etl", {"cpu": 1})) for _ in range(4)]
            held.append(leases.acquire(LeaseRequest("etl", {"cpu": 0.5})))
        record_usage(store, clock)
        evaluate(store, cfg, clock.time())
        with store.session() as s:
            firing = {
                r.labels["alertname"]
                for r in s.scalars(select(AlertRecord).where(AlertRecord.state == "firing"))
            }
        clock.advance(60)
    with store.session() as s:
        fraction = s.scalars(
            select(MetricPoint)
            .where(MetricPoint.name == USED_FRACTION)
            .order_by(MetricPoint.ts.desc(), MetricPoint.id.desc())
        ).first()
    assert fraction is not None and fraction.labels == {"pool": "p", "resource": "cpu"}
    assert fraction.value == pytest.approx(0.95)
    assert "QuotaUsageHigh" in firing
    for lease in held:
        leases.release(lease)
    leases.close()
