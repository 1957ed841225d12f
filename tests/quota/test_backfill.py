"""Backfill around a blocked head: small requests start ahead of it only when that does not
delay its expected start, and a request started out of turn gives its room back at once when a
request it passed needs it, so backfill never starts anyone later than strict order would."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from shipyard.clock import FakeClock
from shipyard.errors import ConfigError, LeasePreempted
from shipyard.quota.admission import Lease, LeaseManager, LeaseRequest
from shipyard.quota.pools import PoolSpec, apply_pools, list_pools, read_pool_file, resolve
from shipyard.quota.scheduling import Holding, may_backfill, shadow
from shipyard.store import Store
from shipyard.store.quota import QuotaEvent, QuotaLease

T0 = 1_700_000_000.0


def pool(
    store: Store,
    *,
    backfill: bool = True,
    backfill_grace_s: float = 0.0,
    quota_release: str = "on-terminal",
) -> None:
    """12 CPUs with no guaranteed shares (so only order and backfill decide), no caps."""
    spec = PoolSpec(
        name="shared",
        capacity={"cpu": 12},
        backfill=backfill,
        backfill_grace_s=backfill_grace_s,
        quota_release=quota_release,  # type: ignore[arg-type]
    )
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
        pipeline,
        {"cpu": cpu},
        step=name,
        run_id=name,
        expected_s=expected_s,
        priority=priority,
        preemptible=True,  # only a request that can give its room back is backfilled
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


def held_first(store: Store) -> str:
    """The small request granted first."""
    with store.session() as s:
        first = s.scalar(
            select(QuotaLease.id)
            .where(QuotaLease.pipeline == "small", QuotaLease.granted_at.is_not(None))
            .order_by(QuotaLease.granted_at, QuotaLease.requested_at)
        )
        assert first is not None
        return first


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
        overruns its estimate by far (150 s). EASY alone started the head only when the
        overrunning one ended, at 150 s; now it yields (its holder stops at its next
        heartbeat), and the head starts at the blocker's end, 100 s, as in strict order,
        however many small ones keep coming."""
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
                if ends > now:
                    try:
                        leases.heartbeat(grant)
                        continue
                    except LeasePreempted:
                        pass  # it yields to the head: stops at once (grace 0)
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
        # promised at 100 (the blocker's end); the overrunning lease yields then
        assert row(store, head).start_promised_at == T0 + 100
        assert granted_at == T0 + 100
        # small ones were backfilled before the head, and admitted again after it
        with store.session() as s:
            grants = sorted(
                t
                for t in s.scalars(
                    select(QuotaLease.granted_at).where(QuotaLease.pipeline == "small")
                )
                if t is not None
            )
        assert grants[0] == T0 and grants[-1] > T0 + 100
        assert not [t for t in grants if T0 + 80 < t < T0 + 100]  # none passed it once due
        assert row(store, held_first(store)).status == "preempted"  # the overrunning one


def events(store: Store, lease_id: str) -> list[tuple[str, float]]:
    with store.session() as s:
        return [
            (e.kind, e.ts)
            for e in s.scalars(
                select(QuotaEvent).where(QuotaEvent.lease_id == lease_id).order_by(QuotaEvent.id)
            )
        ]


def grant(leases: LeaseManager, lease_id: str) -> Lease:
    got = leases.poll(lease_id)
    assert got is not None, f"{lease_id} still waits"
    return got


class TestYield:
    """A lease backfill started out of turn runs in the room strict order does not need yet:
    it is promoted when its own turn comes, and gives the room back when a request it passed
    needs it (``backfill_grace_s``), so nobody starts later than under strict order."""

    def test_a_backfilled_lease_is_promoted_when_its_turn_comes(
        self, store: Store, leases: LeaseManager, clock: FakeClock
    ) -> None:
        pool(store)
        blocker = leases.submit(ask("other", 6, 100, "blocker"))
        head = leases.submit(ask("big", 10, 50, "head", priority=1))
        quick = leases.submit(ask("small", 2, 30, "quick"))
        quick_grant = grant(leases, quick)
        assert leases.poll(head) is None
        assert row(store, quick).out_of_turn and not row(store, blocker).out_of_turn
        clock.at(T0 + 20)
        other = LeaseManager(store, clock=clock, lease_ttl_s=10_000, default_pool="shared")
        try:  # another process: the flag lives on the row
            other.release(grant(other, blocker))
        finally:
            other.close()
        # 12 - 2 held by quick = 10: the head fits beside it, and quick's turn comes after
        assert grant(leases, head).granted_at == T0 + 20
        promoted = row(store, quick)
        assert not promoted.out_of_turn and promoted.preempt_at is None
        assert events(store, quick) == [("granted", T0), ("promoted", T0 + 20)]
        leases.heartbeat(quick_grant)  # it keeps running, renewed as any lease

    @pytest.mark.parametrize("grace_s", [0.0, 3.0])
    def test_a_backfilled_lease_yields_exactly_when_a_request_it_passed_needs_its_room(
        self, store: Store, leases: LeaseManager, clock: FakeClock, grace_s: float
    ) -> None:
        """The blocker ends at 20 s instead of its estimated 100: the head fits in strict
        order now, but two backfilled leases of 2 CPUs hold what it lacks (2 of 10). Only the
        one latest in order yields, within the pool's ``backfill_grace_s``; the head starts as
        soon as it has stopped, and the one spared is promoted."""
        pool(store, backfill_grace_s=grace_s)
        blocker = leases.submit(ask("other", 6, 100, "blocker"))
        head = leases.submit(ask("big", 10, 50, "head", priority=1))
        quick = leases.submit(ask("small", 2, 30, "quick"))
        clock.at(T0 + 1)  # later in order than quick
        beside = leases.submit(ask("small", 2, None, "beside"))  # into the extra
        grant(leases, quick)
        beside_grant = grant(leases, beside)
        clock.at(T0 + 10)
        assert leases.poll(head) is None
        assert row(store, beside).preempt_at is None  # nobody it passed needs its room yet
        clock.at(T0 + 20)
        leases.release(grant(leases, blocker))
        assert leases.poll(head) is None  # 12 - 2 - 2 < 10: it waits for one of them
        assert (row(store, beside).preempt_at, row(store, quick).preempt_at) == (
            T0 + 20 + grace_s,
            None,
        )
        clock.at(T0 + 20 + grace_s / 2)
        assert leases.poll(head) is None
        assert row(store, quick).preempt_at is None  # marked once, never more than needed
        assert [k for k, _ in events(store, beside)] == ["granted", "preempting"]
        with pytest.raises(LeasePreempted) as caught:
            leases.heartbeat(beside_grant)
        assert "yielded to step 'head' of pipeline 'big'" in str(caught.value)
        assert caught.value.stop_by == T0 + 20 + grace_s
        leases.release(beside_grant)  # its holder stopped as asked
        yielded = row(store, beside)
        assert yielded.status == "preempted" and head in (yielded.reason or "")
        assert grant(leases, head).granted_at == T0 + 20 + grace_s / 2
        assert not row(store, quick).out_of_turn

    def test_a_yielding_lease_frees_its_room_at_once_where_the_pool_says_so(
        self, store: Store, leases: LeaseManager, clock: FakeClock
    ) -> None:
        """As above with ``quota_release: on-terminating`` and a 5 s grace: the lease that
        yields stops counting as it is told to stop, so the head starts in the same pass."""
        pool(store, backfill_grace_s=5, quota_release="on-terminating")
        blocker = leases.submit(ask("other", 6, 100, "blocker"))
        head = leases.submit(ask("big", 10, 50, "head", priority=1))
        quick = leases.submit(ask("small", 2, 30, "quick"))
        clock.at(T0 + 1)
        beside = leases.submit(ask("small", 2, None, "beside"))
        grant(leases, quick)
        beside_grant = grant(leases, beside)
        clock.at(T0 + 20)
        leases.release(grant(leases, blocker))
        assert grant(leases, head).granted_at == T0 + 20
        assert (row(store, beside).preempt_at, row(store, quick).preempt_at) == (T0 + 25, None)
        with pytest.raises(LeasePreempted):
            leases.heartbeat(beside_grant)
        leases.release(beside_grant)
        assert row(store, beside).status == "preempted"

    @pytest.mark.parametrize("backfill", [False, True], ids=["strict", "backfill"])
    def test_the_head_starts_no_later_than_under_strict_order_when_leases_end_early(
        self, store: Store, leases: LeaseManager, clock: FakeClock, backfill: bool
    ) -> None:
        """EASY alone protects only the head's reserved start (the blocker's estimated end,
        100 s): a 3-CPU request estimated to end by then was backfilled and still held what
        the head needed when the blocker ended at 20 s, and the head waited until 30 s. Now
        it yields, and the head starts at 20 s, as under strict order."""
        pool(store, backfill=backfill)
        blocker = leases.submit(ask("other", 6, 100, "blocker"))
        head = leases.submit(ask("big", 10, 50, "head", priority=1))
        small = leases.submit(ask("small", 3, 24, "small"))  # 1.25 x 24 = 30 <= 100
        assert (leases.poll(small) is not None) is backfill
        clock.at(T0 + 20)
        leases.release(grant(leases, blocker))
        if backfill:  # the small one is told to stop at once; the head starts when it has
            assert leases.poll(head) is None
            small_grant = grant(leases, small)
            with pytest.raises(LeasePreempted):
                leases.heartbeat(small_grant)
            leases.release(small_grant)
            assert row(store, small).status == "preempted"
        assert grant(leases, head).granted_at == T0 + 20

    @pytest.mark.parametrize("backfill", [False, True], ids=["strict", "backfill"])
    def test_work_done_early_does_not_let_others_pass_a_later_request_of_higher_order(
        self, store: Store, leases: LeaseManager, clock: FakeClock, backfill: bool
    ) -> None:
        """Backfill runs quick (10 s) at 0 s instead of at 20 s, the head's start in strict
        order. Were its room free at 10 s, w (arriving at 21 s) would start in turn and hold
        it when urgent (priority 5) arrives at 25 s; in strict order w still waits then and
        urgent passes it at 30 s. Strict order's account keeps quick's room until 30 s (its
        turn plus the time it ran): w runs out of turn meanwhile, and yields to urgent."""
        pool(store, backfill=backfill)
        blocker = leases.submit(ask("other", 6, 100, "blocker"))
        head = leases.submit(ask("big", 10, 50, "head", priority=1))
        quick = leases.submit(ask("small", 2, 30, "quick"))
        if backfill:
            clock.at(T0 + 10)
            leases.release(grant(leases, quick))  # done before its turn in strict order
        clock.at(T0 + 20)
        leases.release(grant(leases, blocker))
        assert grant(leases, head).granted_at == T0 + 20
        if backfill:
            assert row(store, quick).in_turn_until == T0 + 30
        else:
            quick_grant = grant(leases, quick)
        clock.at(T0 + 21)
        w = leases.submit(ask("small", 2, None, "w"))
        assert (leases.poll(w) is not None) is backfill  # out of turn, in the room quick left
        clock.at(T0 + 25)
        urgent = leases.submit(ask("vip", 2, None, "urgent", priority=5))
        assert leases.poll(urgent) is None
        clock.at(T0 + 30)
        if backfill:
            assert leases.poll(urgent) is None
            w_grant = grant(leases, w)
            with pytest.raises(LeasePreempted, match="yielded to step 'urgent'"):
                leases.heartbeat(w_grant)
            leases.release(w_grant)
        else:
            leases.release(quick_grant)
        assert grant(leases, urgent).granted_at == T0 + 30
        assert row(store, w).status == ("preempted" if backfill else "waiting")

    def test_a_yielded_request_keeps_its_place_in_line(
        self, store: Store, leases: LeaseManager, clock: FakeClock
    ) -> None:
        """Asked again with its first request's time (as the runner's retry does), the request
        that gave its room back is ahead of one that came after it."""
        pool(store)
        blocker = leases.submit(ask("other", 6, 100, "blocker"))
        head = leases.submit(ask("big", 10, 50, "head", priority=1))
        quick_grant = grant(leases, leases.submit(ask("small", 2, 30, "quick")))
        clock.at(T0 + 1)
        beside_grant = grant(leases, leases.submit(ask("small", 2, None, "beside")))
        clock.at(T0 + 10)
        late = leases.submit(ask("small", 2, None, "late"))  # no room beside the head now
        assert leases.poll(late) is None
        clock.at(T0 + 20)
        leases.release(grant(leases, blocker))
        leases.release(beside_grant)  # yielded to the head
        assert row(store, beside_grant.lease_id).status == "preempted"
        assert grant(leases, head).granted_at == T0 + 20
        again = LeaseRequest(
            "small",
            {"cpu": 2},
            step="beside",
            run_id="beside",
            preemptible=True,
            queued_since=beside_grant.requested_at,
        )
        retry = leases.submit(again)
        assert row(store, retry).requested_at == T0 + 1
        clock.at(T0 + 30)
        leases.release(quick_grant)  # room for one of the two
        assert grant(leases, retry).granted_at == T0 + 30
        assert leases.poll(late) is None

    def test_a_request_that_cannot_give_its_room_back_is_not_backfilled(
        self, store: Store, leases: LeaseManager
    ) -> None:
        pool(store)
        leases.submit(ask("other", 6, 100, "blocker"))
        leases.submit(ask("big", 10, 50, "head", priority=1))
        server = leases.submit(LeaseRequest("small", {"cpu": 2}, step="serve", expected_s=30))
        assert leases.poll(server) is None  # not preemptible: it waits its turn


class TestBackfillGrace:
    @pytest.mark.parametrize("value", ["-1", "86401", "soon"])
    def test_a_bad_backfill_grace_is_refused_naming_the_field(
        self, tmp_path: Path, value: str
    ) -> None:
        path = tmp_path / "pools.yaml"
        path.write_text(
            f"pools:\n  - name: p\n    capacity: {{cpu: 4}}\n    backfill_grace_s: {value}\n",
            encoding="utf-8",
        )
        with pytest.raises(ConfigError, match="backfill_grace_s"):
            read_pool_file(path, 0.5)

    @pytest.mark.parametrize("migrated_db_url", ["sqlite"], indirect=True)
    def test_backfill_grace_round_trips_through_the_store_and_defaults_to_zero(
        self, store: Store, tmp_path: Path
    ) -> None:
        path = tmp_path / "pools.yaml"
        path.write_text(
            "pools:\n  - name: p\n    capacity: {cpu: 4}\n    backfill_grace_s: 2.5\n"
            "  - name: q\n    capacity: {cpu: 4}\n",
            encoding="utf-8",
        )
        apply_pools(store, read_pool_file(path, 0.5))
        graces = {p.name: p.policy.backfill_grace_s for p in list_pools(store)}
        assert graces == {"p": 2.5, "q": 0.0}
