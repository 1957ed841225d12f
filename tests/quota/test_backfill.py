"""Backfill around a blocked head: small requests start ahead of it only when that does not
delay its expected start, so the head starts on time and can never be starved by them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select

from shipyard.clock import FakeClock
from shipyard.quota.admission import Lease, LeaseManager, LeaseRequest
from shipyard.quota.pools import PoolSpec, apply_pools, resolve
from shipyard.quota.scheduling import Holding, may_backfill, shadow
from shipyard.store import Store
from shipyard.store.quota import QuotaLease

T0 = 1_700_000_000.0


def pool(store: Store, *, backfill: bool = True) -> None:
    """12 CPUs with no guaranteed shares (so only order and backfill decide), no caps."""
    spec = PoolSpec(name="shared", capacity={"cpu": 12}, backfill=backfill)
    apply_pools(store, [resolve(spec, 1.0)])


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def leases(store: Store, clock: FakeClock) -> Iterator[LeaseManager]:
    manager = LeaseManager(store, clock=clock, lease_ttl_s=10_000, default_pool="shared")
    yield manager
    manager.close()


def ask(
    pipeline: str, cpu: float, expected_s: float | None, name: str, priority: int = 0
) -> LeaseRequest:
    return LeaseRequest(
        pipeline, {"cpu": cpu}, step=name, run_id=name, expected_s=expected_s, priority=priority
    )


def held_small(store: Store) -> list[str]:
    with store.session() as s:
        return list(
            s.scalars(
                select(QuotaLease.id).where(
                    QuotaLease.pipeline == "small", QuotaLease.status == "held"
                )
            )
        )


def row(store: Store, lease_id: str) -> QuotaLease:
    with store.session() as s:
        found = s.get(QuotaLease, lease_id)
        assert found is not None
        return found


class TestShadow:
    def test_head_starts_when_enough_expected_ends_have_passed(self) -> None:
        held = [
            Holding("a", "p", {"cpu": 4}, 0, T0, T0 + 50),
            Holding("b", "p", {"cpu": 4}, 0, T0, T0 + 100),
            Holding("c", "p", {"cpu": 2}, 0, T0, None),
        ]
        found = shadow(held, {"cpu": 10}, {"cpu": 9}, {"cpu": 12}, T0)
        assert found is not None
        assert found.start_at == T0 + 100  # 2 free + 4 at 50 + 4 at 100 ≥ 9
        assert found.extra == {"cpu": 1}
        # a request ending by then may go; one ending later only within the extra
        assert may_backfill({"cpu": 2}, T0 + 100, found, {"cpu": 10}, {"cpu": 12})
        assert not may_backfill({"cpu": 2}, T0 + 101, found, {"cpu": 10}, {"cpu": 12})
        assert may_backfill({"cpu": 1}, None, found, {"cpu": 10}, {"cpu": 12})

    def test_no_reservation_when_the_head_needs_capacity_of_unknown_end(self) -> None:
        held = [Holding("c", "p", {"cpu": 8}, 0, T0, None)]
        assert shadow(held, {"cpu": 8}, {"cpu": 6}, {"cpu": 12}, T0) is None


class TestBackfill:
    def test_small_request_starts_ahead_and_the_head_still_starts_on_time(
        self, store: Store, leases: LeaseManager, clock: FakeClock
    ) -> None:
        pool(store)
        blocker = leases.submit(ask("other", 6, 100, "blocker"))
        head = leases.submit(ask("big", 10, 50, "head", priority=1))  # first in order
        quick = leases.submit(ask("small", 2, 30, "quick"))  # ends by the head's start
        slow = leases.submit(ask("small", 3, 500, "slow"))  # would hold what the head needs
        beside = leases.submit(ask("small", 2, None, "beside"))  # fits beside the head then
        assert leases.poll(head) is None
        assert leases.poll(quick) is not None
        assert leases.poll(slow) is None
        assert leases.poll(beside) is not None
        assert row(store, head).start_promised_at == T0 + 100
        clock.at(T0 + 30)
        leases.release(leases.poll(quick))  # type: ignore[arg-type]
        assert leases.poll(head) is None  # the blocker is still expected until 100
        clock.at(T0 + 100)
        leases.release(leases.poll(blocker))  # type: ignore[arg-type]
        granted = leases.poll(head)
        assert granted is not None and granted.granted_at == T0 + 100

    def test_a_request_whose_estimated_end_falls_after_the_heads_reserved_start_waits(
        self, store: Store, leases: LeaseManager, clock: FakeClock
    ) -> None:
        """Reserved start T0+100 (the blocker's end), 2 CPUs spare beside the head then. A
        3-CPU request estimated at 85 s fits now, but with the upper margin (1.25 × 85 s) it
        would still hold capacity the head needs at T0+100: it is not started."""
        pool(store)
        blocker = leases.submit(ask("other", 6, 100, "blocker"))
        head = leases.submit(ask("big", 10, 50, "head", priority=1))
        late = leases.submit(ask("small", 3, 85, "late"))
        assert leases.poll(head) is None and leases.poll(late) is None
        assert row(store, head).start_promised_at == T0 + 100
        clock.at(T0 + 100)
        leases.release(leases.poll(blocker))  # type: ignore[arg-type]
        granted = leases.poll(head)
        assert granted is not None and granted.granted_at == T0 + 100
        assert leases.poll(late) is None  # it stays behind the head: 12 - 10 < 3

    def test_a_request_that_ends_before_the_heads_reserved_start_is_started(
        self, store: Store, leases: LeaseManager, clock: FakeClock
    ) -> None:
        """The same 3-CPU request estimated at 80 s (1.25 × 80 s = the reserved start) starts
        at once, and having ended by T0+100 it leaves the head its start on time."""
        pool(store)
        blocker = leases.submit(ask("other", 6, 100, "blocker"))
        head = leases.submit(ask("big", 10, 50, "head", priority=1))
        early = leases.submit(ask("small", 3, 80, "early"))
        assert leases.poll(head) is None
        grant = leases.poll(early)
        assert grant is not None and grant.granted_at == T0
        clock.at(T0 + 70)  # it ran 70 s, within its estimate
        leases.release(grant)
        assert leases.poll(head) is None  # the blocker still holds what the head needs
        clock.at(T0 + 100)
        leases.release(leases.poll(blocker))  # type: ignore[arg-type]
        granted = leases.poll(head)
        assert granted is not None and granted.granted_at == T0 + 100

    @pytest.mark.parametrize("migrated_db_url", ["sqlite"], indirect=True)
    def test_without_backfill_nothing_passes_the_head(
        self, store: Store, leases: LeaseManager
    ) -> None:
        pool(store, backfill=False)
        leases.submit(ask("other", 6, 100, "blocker"))
        head = leases.submit(ask("big", 10, 50, "head", priority=1))  # first in order
        quick = leases.submit(ask("small", 2, 30, "quick"))
        assert leases.poll(head) is None and leases.poll(quick) is None

    def test_a_stream_of_small_requests_cannot_starve_the_head(
        self, store: Store, leases: LeaseManager, clock: FakeClock
    ) -> None:
        """Small requests (3 of 12 CPUs) keep arriving, each expected to take 20 s; the first
        overruns its estimate by far. Once the head's promised start (the blocker's end) has
        passed, nothing more is backfilled by its end: the head starts when the leases held
        then have ended (the overrunning one, at 150 s), however many small ones keep coming."""
        pool(store)
        blocker = leases.submit(ask("other", 6, 100, "blocker"))
        head = leases.submit(ask("big", 10, 50, "head", priority=1))  # first in order
        running: dict[str, tuple[Lease, float]] = {}  # id -> (grant, when it really ends)
        granted_at = None
        for i in range(20):
            now = T0 + 10 * i
            clock.at(now)
            if i == 10:
                leases.release(leases.poll(blocker))  # type: ignore[arg-type]
            for lease_id, (grant, ends) in list(running.items()):
                if ends <= now:
                    leases.release(grant)
                    del running[lease_id]
            leases.submit(ask("small", 3, 20, f"s{i}"))
            if granted_at is None and (got := leases.poll(head)) is not None:
                granted_at = got.granted_at
                leases.release(got)  # the head's own work is not what is measured
            for small in held_small(store):
                if small not in running:
                    got = leases.poll(small)
                    assert got is not None
                    # the first small one overruns its 20 s estimate: it takes 150 s
                    running[small] = (got, now + (150 if i == 0 else 20))
        # promised at 100 (the blocker's end); the overrunning lease ends at 150
        assert row(store, head).start_promised_at == T0 + 100
        assert granted_at == T0 + 150
        # small ones were backfilled before the head, and admitted again after it
        with store.session() as s:
            grants = sorted(
                t
                for t in s.scalars(
                    select(QuotaLease.granted_at).where(QuotaLease.pipeline == "small")
                )
                if t is not None
            )
        assert grants[0] == T0 and grants[-1] > T0 + 150
        assert not [t for t in grants if T0 + 80 < t < T0 + 150]  # none passed it once due
