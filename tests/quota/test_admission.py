"""Admission into shared and dedicated pools: fair share, caps, borrowing, priority, expiry."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select

from shipyard.clock import FakeClock
from shipyard.errors import NotFound, QuotaError, QuotaExceeded
from shipyard.quota.admission import LeaseManager, LeaseRequest, reclaim_expired
from shipyard.quota.pools import MemberSpec, PoolSpec, apply_pools, resolve
from shipyard.store import Store
from shipyard.store.quota import QuotaEvent, QuotaLease

GiB = 1024**3


def shared_pool(store: Store, **members: tuple[float, float]) -> None:
    """One shared pool of 12 CPUs / 48 GiB with members given as (share, cap) fractions."""
    spec = PoolSpec(
        name="shared",
        capacity={"cpu": 12, "memory": "48Gi"},
        members=[MemberSpec(pipeline=p, share=s, cap=c) for p, (s, c) in members.items()],
    )
    apply_pools(store, [resolve(spec, 0.5)])


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def admission(store: Store, clock: FakeClock) -> Iterator[LeaseManager]:
    yield LeaseManager(store, clock=clock, lease_ttl_s=30, default_pool="shared")


def held(store: Store, pipeline: str | None = None) -> list[QuotaLease]:
    with store.session() as s:
        q = select(QuotaLease).where(QuotaLease.status == "held")
        if pipeline:
            q = q.where(QuotaLease.pipeline == pipeline)
        return list(s.scalars(q))


def step(pipeline: str, cpu: float, memory_gib: float = 1, **kw: object) -> LeaseRequest:
    return LeaseRequest(pipeline, {"cpu": cpu, "memory": f"{memory_gib}Gi"}, **kw)  # type: ignore[arg-type]


class TestSharedPool:
    def test_heavy_pipeline_cannot_starve_the_others(
        self, store: Store, admission: LeaseManager
    ) -> None:
        """One pipeline submits 50 heavy steps first; the two others still get their share."""
        shared_pool(store, heavy=(1 / 3, 0.5), etl=(1 / 3, 0.5), train=(1 / 3, 0.5))
        heavy = [admission.submit(step("heavy", 2, 8, step=f"h{i}")) for i in range(50)]
        etl = [admission.submit(step("etl", 2, 4, step=f"e{i}")) for i in range(2)]
        train = [admission.submit(step("train", 2, 4, step=f"t{i}")) for i in range(2)]
        # heavy borrowed up to its cap (6 cpu) while nobody else waited: 3 steps
        assert len(held(store, "heavy")) == 3
        # the others' requests are admitted within their share as soon as capacity frees
        for lease in heavy[:3]:
            admission.release(admission.poll(lease))  # type: ignore[arg-type]
        assert {r.id for r in held(store, "etl")} == set(etl)
        assert {r.id for r in held(store, "train")} == set(train)
        # heavy is back to its share (4 cpu = 2 steps) while its other steps wait
        assert sum(r.resources["cpu"] for r in held(store, "heavy")) == 4
        assert sum(r.resources["cpu"] for r in held(store)) == 12

    def test_cap_holds_even_when_pool_is_idle(self, store: Store, admission: LeaseManager) -> None:
        shared_pool(store, heavy=(0.25, 0.5))
        for i in range(10):
            admission.submit(step("heavy", 1, 1, step=f"s{i}"))
        assert sum(r.resources["cpu"] for r in held(store, "heavy")) == 6  # cap = 50 % of 12

    def test_borrows_idle_capacity_and_gives_it_back_when_others_wait(
        self, store: Store, admission: LeaseManager
    ) -> None:
        shared_pool(store, a=(0.25, 1.0), b=(0.75, 1.0))
        a_leases = [admission.submit(step("a", 1, 1, step=f"a{i}")) for i in range(12)]
        assert len(held(store, "a")) == 12  # borrowed the whole idle pool (share is 3)
        b_lease = admission.submit(step("b", 2, 1))
        assert not held(store, "b")  # pool full: b waits
        a_more = admission.submit(step("a", 1, 1, step="a-more"))
        admission.release(admission.poll(a_leases[0]))  # type: ignore[arg-type]
        admission.release(admission.poll(a_leases[1]))  # type: ignore[arg-type]
        assert admission.poll(b_lease) is not None  # freed capacity goes to the waiter
        assert admission.poll(a_more) is None  # a is above its share while b waits
        for lease in a_leases[2:]:
            admission.release(admission.poll(lease))  # type: ignore[arg-type]
        assert admission.poll(a_more) is not None  # back within share: admitted

    def test_higher_priority_goes_first(self, store: Store, admission: LeaseManager) -> None:
        shared_pool(store, a=(0.5, 1.0), b=(0.5, 1.0))
        first = admission.submit(step("a", 12, 1))
        low = admission.submit(step("a", 6, 1, priority=0))
        high = admission.submit(step("b", 6, 1, priority=10))
        admission.release(admission.poll(first))  # type: ignore[arg-type]
        assert admission.poll(high) is not None
        assert admission.poll(low) is not None  # both fit after the big one left

    def test_ties_break_by_dominant_share_then_age(
        self, store: Store, admission: LeaseManager, clock: FakeClock
    ) -> None:
        shared_pool(store, a=(0.5, 1.0), b=(0.5, 1.0))
        blocker = admission.submit(step("a", 12, 1))
        clock.advance(1)
        a_req = admission.submit(step("a", 12, 1, step="a-older"))
        clock.advance(1)
        b_req = admission.submit(step("b", 12, 1, step="b-younger"))
        admission.release(admission.poll(blocker))  # type: ignore[arg-type]
        # equal priority, equal (zero) dominant share → the older request goes first
        assert admission.poll(a_req) is not None and admission.poll(b_req) is None

    def test_least_served_pipeline_first(self, store: Store, admission: LeaseManager) -> None:
        shared_pool(store, a=(0.5, 1.0), b=(0.5, 1.0))
        a_hold = admission.submit(step("a", 4, 1))
        blocker = admission.submit(step("b", 8, 1))
        a_req = admission.submit(step("a", 6, 1))  # older, but a already holds 4/12
        b_req = admission.submit(step("b", 6, 1))
        admission.release(admission.poll(blocker))  # type: ignore[arg-type]
        assert admission.poll(b_req) is not None and admission.poll(a_req) is None
        assert admission.poll(a_hold) is not None


class TestInfeasible:
    def test_more_than_the_pool_fails_at_once(self, store: Store, admission: LeaseManager) -> None:
        shared_pool(store, a=(0.5, 1.0))
        with pytest.raises(QuotaExceeded) as info:
            admission.acquire(step("a", 13, 1))
        assert (info.value.pool, info.value.resource) == ("shared", "cpu")
        assert (info.value.requested, info.value.available) == (13, 12)
        assert not held(store)

    def test_more_than_the_cap_fails_at_once(self, store: Store, admission: LeaseManager) -> None:
        shared_pool(store, a=(0.25, 0.5))
        with pytest.raises(QuotaExceeded, match="cap of pipeline 'a'"):
            admission.acquire(step("a", 1, 30))

    def test_unknown_resource_fails_at_once(self, store: Store, admission: LeaseManager) -> None:
        shared_pool(store, a=(0.5, 1.0))
        with pytest.raises(QuotaExceeded, match="a100"):
            admission.acquire(LeaseRequest("a", {"a100": 1}))

    def test_unknown_pool_is_not_found(self, store: Store, admission: LeaseManager) -> None:
        with pytest.raises(NotFound, match="no pool named 'nowhere'"):
            admission.acquire(LeaseRequest("a", {"cpu": 1}, pool="nowhere"))

    def test_dedicated_pool_refuses_strangers(self, store: Store, admission: LeaseManager) -> None:
        spec = PoolSpec(name="own", mode="dedicated", owner="train", capacity={"cpu": 4})
        apply_pools(store, [resolve(spec, 0.5)])
        assert admission.acquire(LeaseRequest("train", {"cpu": 4}, pool="own"))
        with pytest.raises(QuotaError, match="dedicated to pipeline 'train'"):
            admission.acquire(LeaseRequest("etl", {"cpu": 1}, pool="own"))


class TestLeases:
    def test_expired_lease_is_reclaimed_and_next_admitted(
        self, store: Store, admission: LeaseManager, clock: FakeClock
    ) -> None:
        shared_pool(store, a=(0.5, 1.0), b=(0.5, 1.0))
        grant = admission.acquire(step("a", 12, 1))
        waiter = admission.submit(step("b", 6, 1))
        clock.advance(20)
        admission.heartbeat(grant)  # now expires at +50
        assert admission.poll(waiter) is None
        clock.advance(25)
        assert admission.poll(waiter) is None  # the waiter's row now expires at +75
        clock.advance(10)
        # the waiter kept polling (its row stays alive); the holder did not heartbeat
        assert reclaim_expired(store, clock) == [grant.lease_id]
        assert admission.poll(waiter) is not None
        with pytest.raises(QuotaError, match="expired"):
            admission.heartbeat(grant)

    def test_acquire_times_out_and_leaves_the_queue(
        self, store: Store, admission: LeaseManager
    ) -> None:
        shared_pool(store, a=(0.5, 1.0))
        admission.acquire(step("a", 12, 1))
        with pytest.raises(QuotaError, match="gave up"):
            admission.acquire(step("a", 1, 1), timeout_s=1)
        with store.session() as s:
            assert s.scalar(select(QuotaLease.status).where(QuotaLease.step == "")) is not None
            statuses = sorted(s.scalars(select(QuotaLease.status)))
        assert statuses == ["cancelled", "held"]

    def test_every_grant_and_release_is_an_event_with_the_total(
        self, store: Store, admission: LeaseManager
    ) -> None:
        shared_pool(store, a=(0.5, 1.0))
        g1 = admission.acquire(step("a", 2, 1))
        g2 = admission.acquire(step("a", 3, 1))
        admission.release(g1)
        admission.release(g2)
        admission.release(g2)  # idempotent
        with store.session() as s:
            events = [(e.kind, e.held_total["cpu"]) for e in s.scalars(select(QuotaEvent))]
        assert events == [("granted", 2), ("granted", 5), ("released", 3), ("released", 0)]
