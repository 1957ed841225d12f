"""Preemption: a member coming back for its guaranteed share takes it back from borrowers
(youngest and lowest priority first, after a grace period), as the pool's policy says; the
policy is validated; a pipeline's queued runs are limited with a clear refusal."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from shipyard.clock import FakeClock
from shipyard.errors import ConfigError, LeasePreempted, QueueFull, QuotaError
from shipyard.quota.admission import Lease, LeaseManager, LeaseRequest
from shipyard.quota.pools import (
    MemberSpec,
    PoolSpec,
    apply_pools,
    list_pools,
    read_pool_file,
    resolve,
)
from shipyard.store import Store
from shipyard.store.quota import QuotaEvent, QuotaLease

T0 = 1_700_000_000.0
TTL = 30.0
SQLITE_ONLY = pytest.mark.parametrize("migrated_db_url", ["sqlite"], indirect=True)
"""For the decisions that do not depend on the backend (the timelines run on both)."""


def pool(store: Store, preemption: str = "borrowers", **kw: object) -> None:
    """12 CPUs: ``owner`` and ``borrower`` are guaranteed half each and may use it all."""
    spec = PoolSpec(
        name="shared",
        capacity={"cpu": 12},
        preemption=preemption,
        preemption_grace_s=5,
        members=[
            MemberSpec(pipeline="owner", share=0.5, cap=1.0),
            MemberSpec(pipeline="borrower", share=0.5, cap=1.0),
        ],
        **kw,
    )
    apply_pools(store, [resolve(spec, 1.0)])


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def leases(store: Store, clock: FakeClock) -> Iterator[LeaseManager]:
    manager = LeaseManager(store, clock=clock, lease_ttl_s=TTL, default_pool="shared")
    yield manager
    manager.close()


def take(
    leases: LeaseManager, pipeline: str, cpu: float, name: str, priority: int = 0
) -> Lease | str:
    """The grant if admitted at once, else the waiting request's id."""
    lease_id = leases.submit(
        LeaseRequest(
            pipeline, {"cpu": cpu}, step=name, run_id=name, priority=priority, preemptible=True
        )
    )
    return leases.poll(lease_id) or lease_id


def status(store: Store, lease_id: str) -> tuple[str, float | None]:
    with store.session() as s:
        row = s.get(QuotaLease, lease_id)
        assert row is not None
        return row.status, row.preempt_at


def borrow_all(leases: LeaseManager, clock: FakeClock) -> list[Lease]:
    """The borrower takes the idle pool in three leases, one second apart (youngest last)."""
    grants = []
    for i in range(3):
        clock.at(T0 + i)
        grant = take(leases, "borrower", 4, f"b{i}")
        assert isinstance(grant, Lease)
        grants.append(grant)
    return grants


class TestBorrowers:
    def test_the_owner_gets_its_share_back_within_the_grace_period(
        self, store: Store, leases: LeaseManager, clock: FakeClock
    ) -> None:
        pool(store)
        grants = borrow_all(leases, clock)
        clock.at(T0 + 10)
        waiting = take(leases, "owner", 4, "o")
        assert isinstance(waiting, str)  # the pool is full: the owner waits…
        # …and the youngest borrowed lease is marked, to stop within 5 s
        assert status(store, grants[2].lease_id) == ("held", T0 + 15)
        assert status(store, grants[1].lease_id) == ("held", None)
        leases.heartbeat(grants[1])  # the others renew as before
        with pytest.raises(LeasePreempted) as caught:
            leases.heartbeat(grants[2])
        assert caught.value.stop_by == T0 + 15
        assert "owner" in str(caught.value) and "guaranteed share" in str(caught.value)
        clock.at(T0 + 12)
        leases.release(grants[2])  # its holder stopped: recorded as preempted, not failed
        assert status(store, grants[2].lease_id)[0] == "preempted"
        granted = leases.poll(waiting)
        assert granted is not None and granted.granted_at <= T0 + 15
        with store.session() as s:
            kinds = list(
                s.scalars(select(QuotaEvent.kind).where(QuotaEvent.lease_id == grants[2].lease_id))
            )
        assert kinds == ["granted", "preempting", "preempted"]

    def test_a_preempted_steps_retry_does_not_take_what_was_freed_for_the_owner(
        self, store: Store, leases: LeaseManager, clock: FakeClock
    ) -> None:
        """The owner needs 6 CPUs: two borrowed leases are marked. The first one stops and its
        step asks again at once (expected to take 1 s, so backfill alone would let it pass):
        it waits, since it would take the borrower above its share while the owner waits for
        its own; the owner starts when the second one stops."""
        pool(store)
        grants = borrow_all(leases, clock)
        clock.at(T0 + 10)
        owner = take(leases, "owner", 6, "o")
        assert isinstance(owner, str)
        assert [status(store, g.lease_id)[1] for g in grants] == [None, T0 + 15, T0 + 15]
        clock.at(T0 + 12)
        leases.release(grants[2])
        retry = leases.submit(
            LeaseRequest(
                "borrower", {"cpu": 4}, step="b2", run_id="b2", expected_s=1, preemptible=True
            )
        )
        assert leases.poll(retry) is None and leases.poll(owner) is None  # 4 free of 6
        clock.at(T0 + 13)
        leases.release(grants[1])
        granted = leases.poll(owner)
        assert granted is not None and granted.granted_at == T0 + 13
        assert leases.poll(retry) is None  # 2 CPUs free: it waits for its turn

    def test_no_victim_while_a_lease_ends_by_itself_within_the_grace(
        self, store: Store, leases: LeaseManager, clock: FakeClock
    ) -> None:
        """The borrower's oldest lease is expected to end 3 s after the owner asks, sooner than
        a victim would stop (5 s grace): nothing is preempted then. It overruns: once its
        estimate has passed, its end is unknown and the youngest lease is marked after all."""
        pool(store)
        grants = []
        for i, expected_s in enumerate((13, None, None)):
            clock.at(T0 + i)
            request = LeaseRequest(
                "borrower",
                {"cpu": 4},
                step=f"b{i}",
                run_id=f"b{i}",
                expected_s=expected_s,
                preemptible=True,
            )
            grant = leases.poll(leases.submit(request))
            assert grant is not None
            grants.append(grant)
        clock.at(T0 + 10)
        owner = take(leases, "owner", 4, "o")
        assert isinstance(owner, str)
        assert [status(store, g.lease_id)[1] for g in grants] == [None, None, None]
        clock.at(T0 + 14)  # b0 was expected to end at T0+13 and still holds
        assert leases.poll(owner) is None
        assert [status(store, g.lease_id)[1] for g in grants] == [None, None, T0 + 19]
        clock.at(T0 + 15)
        leases.release(grants[0])  # it ends by itself before the victim has stopped
        granted = leases.poll(owner)
        assert granted is not None and granted.granted_at == T0 + 15

    @SQLITE_ONLY
    def test_a_silent_holder_loses_the_lease_at_its_expiry(
        self, store: Store, leases: LeaseManager, clock: FakeClock
    ) -> None:
        """A holder that stopped heartbeating keeps the capacity until its lease expires (it
        fenced itself by then), and the lease ends ``preempted``."""
        pool(store)
        grants = borrow_all(leases, clock)
        for grant in grants[:2]:
            leases.heartbeat(grant)
        waiting = take(leases, "owner", 4, "o")
        assert isinstance(waiting, str)
        clock.at(T0 + 2 + TTL - 1)
        for grant in grants[:2]:
            leases.heartbeat(grant)
        assert leases.poll(waiting) is None  # marked, past its grace, but not yet expired
        clock.at(T0 + 2 + TTL + 0.5)
        assert leases.poll(waiting) is not None
        assert status(store, grants[2].lease_id)[0] == "preempted"

    @SQLITE_ONLY
    def test_takes_back_only_what_the_owner_lacks_and_no_more(
        self, store: Store, leases: LeaseManager, clock: FakeClock
    ) -> None:
        pool(store)
        grants = borrow_all(leases, clock)
        leases.release(grants[0])  # 4 CPUs free
        waiting = take(leases, "owner", 6, "o")  # lacks 2: one lease is enough
        assert isinstance(waiting, str)
        marked = [g for g in grants[1:] if status(store, g.lease_id)[1] is not None]
        assert [g.lease_id for g in marked] == [grants[2].lease_id]

    @SQLITE_ONLY
    def test_a_borrower_within_its_share_is_not_preempted(
        self, store: Store, leases: LeaseManager, clock: FakeClock
    ) -> None:
        pool(store)
        mine = take(leases, "owner", 6, "o1")
        theirs = take(leases, "borrower", 6, "b1")
        assert isinstance(mine, Lease) and isinstance(theirs, Lease)
        more = take(leases, "owner", 2, "o2")  # above the owner's share: waits, no victim
        assert isinstance(more, str)
        assert status(store, theirs.lease_id) == ("held", None)

    @SQLITE_ONLY
    def test_a_lease_not_preemptible_is_never_a_victim(
        self, store: Store, leases: LeaseManager
    ) -> None:
        """A model server's lease (or a run's reservation) does not ask to be preemptible."""
        pool(store)
        server = leases.acquire(LeaseRequest("borrower", {"cpu": 12}, step="serve"))
        assert isinstance(take(leases, "owner", 4, "o"), str)
        assert status(store, server.lease_id) == ("held", None)

    @SQLITE_ONLY
    def test_never_preempts_by_default(
        self, store: Store, leases: LeaseManager, clock: FakeClock
    ) -> None:
        pool(store, preemption="never")
        grants = borrow_all(leases, clock)
        assert isinstance(take(leases, "owner", 4, "o"), str)
        assert all(status(store, g.lease_id) == ("held", None) for g in grants)


class TestLowerPriority:
    @SQLITE_ONLY
    def test_a_higher_priority_request_preempts_the_lowest_priority_youngest_lease(
        self, store: Store, leases: LeaseManager, clock: FakeClock
    ) -> None:
        pool(store, preemption="lower-priority")
        low_old = take(leases, "owner", 4, "low-old", priority=0)
        clock.at(T0 + 1)
        low_young = take(leases, "owner", 4, "low-young", priority=0)
        clock.at(T0 + 2)
        high = take(leases, "borrower", 4, "high", priority=5)
        assert all(isinstance(g, Lease) for g in (low_old, low_young, high))
        urgent = take(leases, "borrower", 4, "urgent", priority=9)  # above its share
        assert isinstance(urgent, str)
        marked = [
            g.lease_id  # type: ignore[union-attr]
            for g in (low_old, low_young, high)
            if status(store, g.lease_id)[1] is not None  # type: ignore[union-attr]
        ]
        assert marked == [low_young.lease_id]  # type: ignore[union-attr]

    @SQLITE_ONLY
    def test_borrowers_policy_ignores_priority_above_the_share(
        self, store: Store, leases: LeaseManager, clock: FakeClock
    ) -> None:
        pool(store, preemption="borrowers")
        take(leases, "owner", 6, "o")
        theirs = take(leases, "borrower", 6, "b")
        urgent = take(leases, "borrower", 4, "urgent", priority=9)
        assert isinstance(urgent, str) and isinstance(theirs, Lease)
        with store.session() as s:
            assert s.scalar(select(func.count()).where(QuotaLease.preempt_at.is_not(None))) == 0


class TestRoomFreedAtOnce:
    """``quota_release: on-terminating`` (Kueue's ``OnTerminating``): a lease taken back stops
    counting against the pool when its holder is told to stop, not when it has stopped."""

    def test_the_owner_starts_at_once_beside_the_stopping_borrower(
        self, store: Store, leases: LeaseManager, clock: FakeClock
    ) -> None:
        pool(store, quota_release="on-terminating")
        grants = borrow_all(leases, clock)
        clock.at(T0 + 10)
        owner = take(leases, "owner", 4, "o")
        assert isinstance(owner, Lease) and owner.granted_at == T0 + 10  # no wait at all
        assert status(store, grants[2].lease_id) == ("held", T0 + 15)  # still told to stop
        with pytest.raises(LeasePreempted) as caught:
            leases.heartbeat(grants[2])
        assert caught.value.stop_by == T0 + 15
        with store.session() as s:
            events = list(
                s.execute(
                    select(QuotaEvent.lease_id, QuotaEvent.kind, QuotaEvent.held_total)
                    .where(QuotaEvent.ts == T0 + 10)
                    .order_by(QuotaEvent.id)
                )
            )
        # the victim's room was given back first: the owner's grant leaves the pool at capacity
        assert [(e[0], e[1]) for e in events][-2:] == [
            (grants[2].lease_id, "preempting"),
            (owner.lease_id, "granted"),
        ]
        assert events[-1][2] == {"cpu": 12.0}
        clock.at(T0 + 12)
        leases.release(grants[2])
        assert status(store, grants[2].lease_id)[0] == "preempted"
        # its end frees nothing more (its room was counted free already): the pool is full
        assert isinstance(take(leases, "borrower", 4, "b3"), str)

    def test_it_does_not_wait_for_a_lease_that_ends_within_the_grace(
        self, store: Store, leases: LeaseManager, clock: FakeClock
    ) -> None:
        """Waiting for a lease expected to end in 3 s saves a victim's work only where a victim
        frees its room no sooner than the grace (5 s); freed at once, the owner starts now."""
        pool(store, quota_release="on-terminating")
        for i, expected_s in enumerate((13, None, None)):
            clock.at(T0 + i)
            request = LeaseRequest(
                "borrower", {"cpu": 4}, step=f"b{i}", run_id=f"b{i}",
                expected_s=expected_s, preemptible=True,
            )  # fmt: skip
            assert leases.poll(leases.submit(request)) is not None
        clock.at(T0 + 10)
        assert isinstance(take(leases, "owner", 4, "o"), Lease)

    @SQLITE_ONLY
    def test_the_setting_is_validated_and_kept(self, store: Store, tmp_path: Path) -> None:
        path = tmp_path / "pools.yaml"
        path.write_text(
            "pools:\n  - name: p\n    capacity: {cpu: 4}\n    quota_release: whenever\n",
            encoding="utf-8",
        )
        with pytest.raises(ConfigError, match="quota_release") as caught:
            read_pool_file(path, 0.5)
        assert "on-terminal" in str(caught.value) and "on-terminating" in str(caught.value)
        path.write_text(
            "pools:\n  - name: p\n    capacity: {cpu: 4}\n    quota_release: on-terminating\n",
            encoding="utf-8",
        )
        apply_pools(store, read_pool_file(path, 0.5))
        (p,) = list_pools(store)
        assert p.policy.quota_release == "on-terminating" and p.policy.releases_on_terminating
        path.write_text("pools:\n  - name: p\n    capacity: {cpu: 4}\n", encoding="utf-8")
        (default,) = read_pool_file(path, 0.5)
        assert default.policy.quota_release == "on-terminal"


class TestPolicyFile:
    @SQLITE_ONLY
    def test_unknown_preemption_is_refused_clearly_and_changes_nothing(
        self, store: Store, tmp_path: Path
    ) -> None:
        pool(store)
        path = tmp_path / "pools.yaml"
        path.write_text(
            "pools:\n  - name: shared\n    capacity: {cpu: 4}\n    preemption: sometimes\n",
            encoding="utf-8",
        )
        with pytest.raises(ConfigError) as caught:
            read_pool_file(path, 0.5)
        message = str(caught.value)
        assert "preemption" in message and "never, borrowers, lower-priority" in message
        assert "'sometimes'" in message
        (only,) = list_pools(store)
        assert only.policy.preemption == "borrowers" and only.capacity == {"cpu": 12}

    @pytest.mark.parametrize(
        ("line", "field"),
        [
            ("preemption_grace_s: -1", "preemption_grace_s"),
            ("max_queued_runs: 0", "max_queued_runs"),
            ("backfill: perhaps", "backfill"),
        ],
    )
    def test_bad_policy_values_name_their_field(
        self, tmp_path: Path, line: str, field: str
    ) -> None:
        path = tmp_path / "pools.yaml"
        path.write_text(
            f"pools:\n  - name: p\n    capacity: {{cpu: 4}}\n    {line}\n", encoding="utf-8"
        )
        with pytest.raises(ConfigError, match=field):
            read_pool_file(path, 0.5)

    @SQLITE_ONLY
    def test_policy_round_trips_through_the_store(self, store: Store, tmp_path: Path) -> None:
        path = tmp_path / "pools.yaml"
        path.write_text(
            "pools:\n  - name: p\n    capacity: {cpu: 4}\n    preemption: lower-priority\n"
            "    preemption_grace_s: 7\n    backfill: false\n    max_queued_runs: 3\n"
            "    members:\n      - {pipeline: etl, share: 0.5, max_queued_runs: 1}\n",
            encoding="utf-8",
        )
        apply_pools(store, read_pool_file(path, 0.5))
        (p,) = list_pools(store)
        assert (p.policy.preemption, p.policy.preemption_grace_s) == ("lower-priority", 7.0)
        assert p.policy.backfill is False
        assert p.queue_limit("etl") == 1 and p.queue_limit("other") == 3


class TestQueuedRuns:
    @SQLITE_ONLY
    def test_a_further_run_that_would_wait_is_refused_and_leaves_nothing(
        self, store: Store, leases: LeaseManager
    ) -> None:
        pool(store, preemption="never", max_queued_runs=2)
        assert isinstance(take(leases, "owner", 12, "running"), Lease)
        assert isinstance(take(leases, "borrower", 4, "q1"), str)
        assert isinstance(take(leases, "borrower", 4, "q2"), str)
        with store.session() as s:
            before = s.scalar(select(func.count()).select_from(QuotaLease))
        with pytest.raises(QueueFull) as caught:
            take(leases, "borrower", 4, "q3")
        assert "'borrower'" in str(caught.value) and "limit 2" in str(caught.value)
        assert isinstance(caught.value, QuotaError)
        with store.session() as s:
            assert s.scalar(select(func.count()).select_from(QuotaLease)) == before
        # a run already queued may ask for another step; another pipeline is not limited by it
        leases.submit(LeaseRequest("borrower", {"cpu": 1}, step="second", run_id="q1"))
        assert isinstance(take(leases, "other", 1, "x"), str)
