"""Leases and admission: who gets capacity in a pool, in which order, without over-admission.

Every request is a row of ``quota_leases`` — ``waiting`` in the queue, then ``held`` — so the
queue and its order hold across processes. Each admission decision is one transaction that first
takes the pool's lock (SQLite: ``BEGIN IMMEDIATE``, the database write lock; PostgreSQL:
``SELECT … FOR UPDATE`` on the pool row), then reclaims expired leases, then admits what fits.
Two processes therefore never decide on the same pool at once, which is what makes
over-admission impossible.

Which waiting requests are admitted, in which order, around a blocked head (backfill), is the
scheduling pass, :mod:`shipyard.quota.queue`; which held leases are taken back for one that
waits is :mod:`shipyard.quota.preemption` (a marked holder learns it here, at its next
heartbeat: :class:`~shipyard.errors.LeasePreempted`).

**Queued runs.** A pool may cap how many runs of one pipeline wait in its queue
(``max_queued_runs``, per member or for the pool): a request of a further run that would have
to wait is refused with :class:`~shipyard.errors.QueueFull` and leaves nothing behind.

A request that can never fit (more than the pool's capacity or its pipeline's cap) fails at once
with :class:`~shipyard.errors.QuotaExceeded`. Leases carry a heartbeat and expire after
``lease_ttl_s``; expired leases (and waiting rows whose waiter stopped polling) are reclaimed at
every admission and by :func:`reclaim_expired`, which the daemon calls.

**Fencing.** An expired lease is reclaimed and its capacity granted again, whether or not its
holder still runs (a holder on a loaded machine can be late). So a holder must stop before its
lease can expire: every grant carries a *fencing token* (``fence``, the pool's grant counter,
increasing), a heartbeat renews only the lease with that id *and* token that is still held and
unexpired, and the holder keeps a deadline of ``expires_at − fence_margin_s(ttl)`` (a quarter
of the TTL) from its last successful renewal. It renews every :func:`renew_every_s` (a third of
the TTL, at most 5 s), so one late heartbeat is tolerated; when the deadline passes without a
renewal, or a heartbeat is refused, the holder kills its work at once (the pipelines runner
records ``lease lost: …``). The reclaimer expires a lease only after ``expires_at``, a margin
later than the holder stopped: real use never exceeds what the pool granted, as long as the
clocks of the hosts involved differ by less than the margin.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Self

from sqlalchemy import Connection, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from shipyard.clock import SYSTEM_CLOCK, Clock
from shipyard.config import Settings
from shipyard.errors import LeasePreempted, QueueFull, QuotaError, StoreError
from shipyard.pipelines.executor import Grant, StepRequest
from shipyard.quantities import Amounts, parse_amounts
from shipyard.quota.lease_rows import amounts_of, queued_runs
from shipyard.quota.pools import Pool, check_feasible, load_pool, pool_exists
from shipyard.quota.queue import admit_waiting
from shipyard.quota.resources import add
from shipyard.statuses import LEASE_ACTIVE as ACTIVE
from shipyard.store import Store, new_id
from shipyard.store.quota import QuotaLease

MAX_RENEW_EVERY_S = 5.0


def renew_every_s(ttl_s: float) -> float:
    """How often a holder renews a lease of ``ttl_s``: a third of it, at most 5 s."""
    return min(MAX_RENEW_EVERY_S, ttl_s / 3)


def fence_margin_s(ttl_s: float) -> float:
    """How long before ``expires_at`` a holder that could not renew must have stopped."""
    return ttl_s / 4


@dataclass(frozen=True)
class LeaseRequest:
    """What a step (or a whole run, with ``--reserve``) asks of a pool."""

    pipeline: str
    resources: Mapping[str, float | int | str]
    pool: str | None = None
    run_id: str = ""
    step: str = ""
    step_run_id: str = ""
    priority: int = 0
    expected_s: float | None = None
    """How long the holder is expected to hold the lease (a step's history, at most its declared
    timeout): what backfill plans with; None: unknown."""
    preemptible: bool = False
    """Whether the pool may take the lease back (its holder stops on
    :class:`~shipyard.errors.LeasePreempted` and can retry: a pipeline step). Off unless asked:
    a model server's lease or a run's reservation is never preempted."""
    queued_since: float | None = None
    """When the request first joined the queue, if before now: its ``requested_at``, which
    places it in admission order. A step retried after its lease was taken back passes its
    first request's time, so giving the room back does not cost it its place in line."""


@dataclass(frozen=True)
class Lease:
    """A held lease: the capacity is the holder's until it releases or stops heartbeating."""

    lease_id: str
    pool: str
    pipeline: str
    resources: Amounts
    granted_at: float
    expires_at: float
    step: str = ""
    run_id: str = ""
    assigned: dict[str, list[int]] = field(default_factory=dict)
    fence: int = 0
    requested_at: float = 0.0
    """When the request joined the queue (a retry after preemption passes it on)."""


def _lease(row: QuotaLease) -> Lease:
    assert row.granted_at is not None
    return Lease(
        row.id,
        row.pool,
        row.pipeline,
        amounts_of(row.resources),
        row.granted_at,
        row.expires_at,
        row.step,
        row.run_id,
        fence=row.fence,
        requested_at=row.requested_at,
    )


class LeaseManager:
    """Leases in pools: ``acquire`` → ``heartbeat``… → ``release`` (the runner's seam over it
    is :class:`QuotaAdmission`).

    >>> admission = LeaseManager(store, lease_ttl_s=30)          # doctest: +SKIP
    >>> grant = admission.acquire(LeaseRequest("etl", {"cpu": 2, "memory": "4Gi"}, pool="shared"))
    >>> admission.release(grant)

    One manager may be shared by threads (a server's heartbeat thread, a runner's steps): on
    SQLite its one connection and file lock are taken by one thread at a time.
    """

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock = SYSTEM_CLOCK,
        lease_ttl_s: float = 30.0,
        default_pool: str = "local",
        poll_interval_s: float = 0.05,
    ) -> None:
        self.store = store
        self.clock = clock
        self.lease_ttl_s = lease_ttl_s
        self.default_pool = default_pool
        self.poll_interval_s = poll_interval_s
        self._lock_fd: int | None = None
        self._conn: Connection | None = None
        # flock is per open file: threads sharing the descriptor would all pass it
        self._threads = threading.Lock()
        database = store.engine.url.database
        if store.dialect == "sqlite" and database and database != ":memory:":
            self._lock_path: str | None = f"{database}.quota-lock"
        else:
            self._lock_path = None

    @contextmanager
    def _decide(self) -> Iterator[Session]:
        """One admission transaction. On SQLite a file lock queues the deciders in the kernel
        before ``BEGIN IMMEDIATE``: SQLite's own busy handler polls with sleeps of up to 100 ms,
        which leaves the write lock idle between deciders; ``flock`` hands it over at once."""
        if self._lock_path is None:
            with self.store.session(immediate=True) as s:
                yield s
            return
        with self._threads:
            if self._lock_fd is None:
                self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            if self._conn is None:
                # one connection kept for this manager: the store opens one per transaction,
                # and closing the last connection to a WAL database checkpoints it (an fsync)
                self._conn = self.store.engine.connect().execution_options(sqlite_begin="IMMEDIATE")
            conn = self._conn
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                with Session(conn, expire_on_commit=False) as s:
                    try:
                        with s.begin():
                            yield s
                    finally:
                        if conn.in_transaction():
                            conn.rollback()
            except OperationalError as exc:
                raise StoreError(f"metadata database error: {exc.orig}") from exc
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close the connection and lock file this manager keeps (SQLite only)."""
        with self._threads:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def submit(self, request: LeaseRequest) -> str:
        """Queue the request (admitting it at once when it may be); return its lease id.
        Raises :class:`QuotaExceeded` at once for a request that can never fit."""
        return self._submit(request)[0]

    def _submit(self, request: LeaseRequest) -> tuple[str, Lease | None]:
        resources = parse_amounts(request.resources, what=f"step {request.step or '?'}")
        pool_name = request.pool or self.default_pool
        now = self.clock.time()
        with self._decide() as s:
            pool = load_pool(s, pool_name, lock=True)
            check_feasible(pool, request.pipeline, resources)
            row = QuotaLease(
                id=new_id(),
                pool=pool.name,
                pipeline=request.pipeline,
                run_id=request.run_id,
                step=request.step,
                step_run_id=request.step_run_id,
                resources=resources,
                used={},
                priority=request.priority,
                status="waiting",
                holder_pid=os.getpid(),
                requested_at=now if request.queued_since is None else request.queued_since,
                heartbeat_at=now,
                expires_at=now + self.lease_ttl_s,
                expected_s=request.expected_s,
                preemptible=request.preemptible,
            )
            queued = queued_runs(s, pool, request.pipeline, request.run_id or row.id)
            admit_waiting(s, pool, now, new=row)
            limit = pool.queue_limit(request.pipeline)
            # a further run that would wait is refused; raising rolls the decision back
            if (
                row.status == "waiting"
                and queued is not None
                and limit is not None
                and len(queued) >= limit
            ):
                raise QueueFull(pool.name, request.pipeline, len(queued), limit)
            return row.id, (_lease(row) if row.status == "held" else None)

    def poll(self, lease_id: str) -> Lease | None:
        """The grant if the request is admitted by now, else ``None`` (the waiting row's own
        heartbeat is refreshed, so a waiter that stops polling leaves the queue)."""
        now = self.clock.time()
        with self._decide() as s:
            pool_name = s.scalar(select(QuotaLease.pool).where(QuotaLease.id == lease_id))
            if pool_name is None:
                raise QuotaError(f"lease {lease_id} does not exist")
            pool = load_pool(s, pool_name, lock=True)
            row = s.get(QuotaLease, lease_id)
            assert row is not None
            if row.status == "waiting":  # the waiter is alive: it is polling
                row.heartbeat_at, row.expires_at = now, now + self.lease_ttl_s
            admit_waiting(s, pool, now)
            if row.status == "held":
                return _lease(row)
            if row.status != "waiting":
                raise QuotaError(f"request {lease_id} left the queue: {row.status} ({row.reason})")
            return None

    def acquire(self, request: LeaseRequest, timeout_s: float | None = None) -> Lease:
        """Wait until the request is admitted; raise :class:`QuotaError` after ``timeout_s``."""
        lease_id, grant = self._submit(request)
        start = self.clock.monotonic()
        while True:
            if grant is not None:
                return grant
            if timeout_s is not None and self.clock.monotonic() - start >= timeout_s:
                self.cancel(lease_id)
                raise QuotaError(
                    f"step {request.step!r} of {request.pipeline!r} waited {timeout_s:g}s "
                    f"for pool {request.pool or self.default_pool!r} and gave up"
                )
            self.clock.sleep(self.poll_interval_s)
            grant = self.poll(lease_id)

    def heartbeat(self, grant: Lease, used: Mapping[str, float] | None = None) -> Lease:
        """Extend the lease (and record measured usage); :class:`QuotaError` if it was reclaimed,
        expired or granted again (the fencing token no longer matches): its holder must stop."""
        now = self.clock.time()
        values: dict[str, object] = {"heartbeat_at": now, "expires_at": now + self.lease_ttl_s}
        if used is not None:
            values["used"] = {r: float(v) for r, v in used.items()}
        with self.store.session() as s:
            result = s.execute(
                update(QuotaLease)
                .where(
                    QuotaLease.id == grant.lease_id,
                    QuotaLease.fence == grant.fence,
                    QuotaLease.status == "held",
                    QuotaLease.expires_at >= now,
                    QuotaLease.preempt_at.is_(None),
                )
                .values(**values)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                row = s.get(QuotaLease, grant.lease_id)
                if (
                    row is not None
                    and row.fence == grant.fence
                    and row.status == "held"
                    and row.expires_at >= now
                    and row.preempt_at is not None
                ):  # being taken back: no longer renewed; the holder stops by preempt_at
                    raise LeasePreempted(
                        row.id, row.pool, row.preempt_at, row.reason or "preempted"
                    )
                raise QuotaError(
                    f"lease {grant.lease_id} in pool {grant.pool!r} has expired; "
                    "its capacity was reclaimed"
                )
        return Lease(
            grant.lease_id,
            grant.pool,
            grant.pipeline,
            grant.resources,
            grant.granted_at,
            now + self.lease_ttl_s,
            grant.step,
            grant.run_id,
            grant.assigned,
            grant.fence,
            grant.requested_at,
        )

    def release(self, grant: Lease, reason: str = "released") -> None:
        """Give the capacity back and admit whoever may go next. Idempotent."""
        self._end(grant.lease_id, grant.pool, "released", reason)

    def cancel(self, lease_id: str) -> None:
        """Take a request out of the queue (or give its capacity back if already held)."""
        self._end(lease_id, None, "cancelled", "cancelled by its requester")

    def _end(self, lease_id: str, pool_name: str | None, status: str, reason: str) -> None:
        now = self.clock.time()
        with self._decide() as s:
            if pool_name is None:
                pool_name = s.scalar(select(QuotaLease.pool).where(QuotaLease.id == lease_id))
                if pool_name is None:
                    return
            pool = load_pool(s, pool_name, lock=True)
            admit_waiting(s, pool, now, end=(lease_id, status, reason))


def held_total(s: Session, pool: Pool) -> Amounts:
    """What the pool's held leases add up to, per resource of the pool (and any other)."""
    rows = s.scalars(
        select(QuotaLease.resources).where(
            QuotaLease.pool == pool.name, QuotaLease.status == "held"
        )
    )
    total: Amounts = {r: 0.0 for r in pool.capacity}
    for resources in rows:
        total = add(total, amounts_of(resources))
    return total


def reclaim_expired(store: Store, clock: Clock = SYSTEM_CLOCK) -> list[str]:
    """Expire every lease (and waiting request) past its expiry in every pool, admitting what
    may go next. Returns the ids reclaimed. The daemon calls this every tick."""
    now = clock.time()
    with store.session() as s:
        pools = list(
            s.scalars(
                select(QuotaLease.pool)
                .where(QuotaLease.status.in_(ACTIVE), QuotaLease.expires_at < now)
                .distinct()
            )
        )
    reclaimed: list[str] = []
    for name in pools:
        with store.session(immediate=True) as s:
            pool = load_pool(s, name, lock=True)
            before = set(
                s.scalars(
                    select(QuotaLease.id).where(
                        QuotaLease.pool == name,
                        QuotaLease.status.in_(ACTIVE),
                        QuotaLease.expires_at < now,
                    )
                )
            )
            admit_waiting(s, pool, now)
            reclaimed.extend(sorted(before))
    return reclaimed


def release_run_leases(
    store: Store, run_id: str, reason: str, clock: Clock = SYSTEM_CLOCK
) -> list[str]:
    """End every lease (held or waiting) of the run, admitting what may go next in each pool;
    returns their ids. For a run whose runner died or that was cancelled from outside."""
    with store.session() as s:
        rows = list(
            s.execute(
                select(QuotaLease.id, QuotaLease.pool).where(
                    QuotaLease.run_id == run_id, QuotaLease.status.in_(ACTIVE)
                )
            )
        )
    ended: list[str] = []
    for lease_id, pool_name in rows:
        with store.session(immediate=True) as s:
            pool = load_pool(s, pool_name, lock=True)
            row = s.get(QuotaLease, lease_id)
            if row is None or row.status not in ACTIVE:
                continue
            status = "released" if row.status == "held" else "cancelled"
            admit_waiting(s, pool, clock.time(), end=(lease_id, status, reason))
            ended.append(lease_id)
    return ended


def lease_detail(lease: Lease, leases: LeaseManager) -> dict[str, object]:
    """A grant's ``detail`` for a lease: the pool, expiry, devices and what its holder needs
    to fence itself (the token, how often to renew, how long before expiry to stop)."""
    ttl = leases.lease_ttl_s
    return {
        "pool": lease.pool,
        "expires_at": lease.expires_at,
        "assigned": lease.assigned,
        "fence": lease.fence,
        "lease_ttl_s": ttl,
        "renew_every_s": renew_every_s(ttl),
        "fence_margin_s": fence_margin_s(ttl),
        "requested_at": lease.requested_at,
    }


class QuotaAdmission:
    """Quota's :class:`~shipyard.pipelines.executor.PoolAdmission`, which a face (``shipyard
    run``) hands to the pipelines runner.

    Each step attempt (and a run's ``--reserve`` grant) takes a lease in ``request.pool`` (else
    ``settings.quota.default_pool``); the grant's ``detail`` names the pool, the lease, its
    expiry and what its holder needs to fence itself (:func:`lease_detail`). One instance
    serves all of a run's step threads: its :class:`LeaseManager` is shared by threads.
    """

    def __init__(self, leases: LeaseManager, timeout_s: float | None = None) -> None:
        self.leases = leases
        self.timeout_s = timeout_s
        self._held: dict[str, Lease] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_workspace(cls, store: Store, settings: Settings, clock: Clock = SYSTEM_CLOCK) -> Self:
        return cls(
            LeaseManager(
                store,
                clock=clock,
                lease_ttl_s=settings.quota.lease_ttl_s,
                default_pool=settings.quota.default_pool,
            )
        )

    def pool_exists(self, pool: str) -> bool:
        return pool_exists(self.leases.store, pool)

    def close(self) -> None:
        self.leases.close()

    def acquire(self, request: StepRequest) -> Grant:
        lease = self.leases.acquire(
            LeaseRequest(
                request.pipeline,
                request.resources,
                pool=request.pool,
                run_id=request.run_id,
                step=request.step,
                step_run_id=request.step_run_id,
                priority=request.priority,
                expected_s=request.expected_s,
                preemptible=request.preemptible,
                queued_since=request.queued_since,
            ),
            timeout_s=self.timeout_s,
        )
        with self._lock:
            self._held[lease.lease_id] = lease
        return Grant(
            request, lease.lease_id, dict(lease.resources), lease_detail(lease, self.leases)
        )

    def heartbeat(self, grant: Grant) -> float | None:
        """Renew the lease; its new expiry. :class:`QuotaError` when it was lost (fencing)."""
        with self._lock:
            lease = self._held.get(grant.lease_id)
        if lease is None:
            return None
        renewed = self.leases.heartbeat(lease)
        with self._lock:
            self._held[grant.lease_id] = renewed
        return renewed.expires_at

    def release(self, grant: Grant) -> None:
        with self._lock:
            lease = self._held.pop(grant.lease_id, None)
        if lease is not None:
            self.leases.release(lease)
