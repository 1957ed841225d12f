"""Leases and admission: who gets capacity in a pool, in which order, without over-admission.

Every request is a row of ``quota_leases`` — ``waiting`` in the queue, then ``held`` — so the
queue and its order hold across processes. Each admission decision is one transaction that first
takes the pool's lock (SQLite: ``BEGIN IMMEDIATE``, the database write lock; PostgreSQL:
``SELECT … FOR UPDATE`` on the pool row), then reclaims expired leases, then admits what fits.
Two processes therefore never decide on the same pool at once, which is what makes
over-admission impossible.

The scheduling pass (:func:`_admit_waiting`) admits waiting requests one at a time, each time in
this order:

1. higher ``priority`` first;
2. then the pipeline with the lower *dominant resource share* — max over resources of
   held_r / capacity_r, divided by the member's weight — as in Dominant Resource Fairness
   (Ghodsi et al., "Dominant Resource Fairness: Fair Allocation of Multiple Resource Types",
   NSDI 2011) and Kueue's fair sharing (kueue.sigs.k8s.io, "Fair Sharing": the lowest share is
   admitted first, shares weighted by ``fairSharing.weight``);
3. then the older request (``requested_at``), then the lease id (deterministic ties).

A request is skipped (others may pass it) when it would take its pipeline over its **cap**, or
over its guaranteed **share** while another pipeline waits for capacity within its own share
(borrowing idle capacity above the share is allowed only while nobody else waits for theirs —
so a borrower gives capacity back first, as its leases end). A request that is next in order
but does not fit in the pool's free capacity is the *head*: with the pool's ``backfill`` off,
it stops the pass (nothing behind it jumps ahead); with it on (the default), a request behind
it may start only if that does not delay the head's expected start (EASY backfill,
:mod:`shipyard.quota.scheduling`), so big requests are not starved by small ones either way.

**Preemption** (the pool's ``preemption``: ``never`` by default, ``borrowers``,
``lower-priority``). When a request that may reclaim capacity waits — one within its
pipeline's guaranteed share, or (``lower-priority``) one of higher priority — the pass marks
the held leases to take back (``preempt_at`` = now + ``preemption_grace_s``), youngest and
lowest priority first, only as many as free what the request lacks. A marked lease is no
longer renewed: its holder's next heartbeat raises :class:`~shipyard.errors.LeasePreempted`,
the holder sends SIGTERM, then SIGKILL at ``preempt_at``, and gives the lease back, which is
recorded ``preempted`` (not ``released``, not failed). A holder that went silent keeps the
capacity until its lease expires, as fencing demands (it stopped itself by then); so a member
gets its share back within the grace period plus one renewal interval from a live holder.

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
from shipyard.errors import LeasePreempted, QueueFull, QuotaError, QuotaExceeded, StoreError
from shipyard.pipelines.executor import Grant, StepRequest
from shipyard.quantities import Amounts, parse_amounts
from shipyard.quota.pools import Member, Pool, dominant_share, load_pool
from shipyard.quota.resources import EPSILON, add, first_excess, subtract
from shipyard.quota.scheduling import Holding, Reservation, fits, may_backfill, shadow, victims
from shipyard.statuses import LEASE_ACTIVE as ACTIVE
from shipyard.store import Store, new_id
from shipyard.store.quota import QuotaEvent, QuotaLease, QuotaPool

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


def _amounts(raw: Mapping[str, object]) -> Amounts:
    return {r: float(v) for r, v in raw.items()}  # type: ignore[arg-type]


def _lease(row: QuotaLease) -> Lease:
    assert row.granted_at is not None
    return Lease(
        row.id,
        row.pool,
        row.pipeline,
        _amounts(row.resources),
        row.granted_at,
        row.expires_at,
        row.step,
        row.run_id,
        fence=row.fence,
    )


def check_feasible(pool: Pool, pipeline: str, resources: Amounts) -> None:
    """Raise :class:`QuotaExceeded` if the request can never be admitted in this pool."""
    if excess := first_excess(resources, pool.capacity):
        raise QuotaExceeded(pool.name, excess[0], excess[1], excess[2], "pool capacity")
    member = pool.member(pipeline)
    if excess := first_excess(resources, member.cap):
        raise QuotaExceeded(
            pool.name, excess[0], excess[1], excess[2], f"cap of pipeline {pipeline!r}"
        )


def _event(s: Session, pool: str, lease_id: str, kind: str, now: float, held: Amounts) -> None:
    s.add(QuotaEvent(pool=pool, lease_id=lease_id, kind=kind, ts=now, held_total=dict(held)))


def _holding(r: QuotaLease) -> Holding:
    granted_at = r.granted_at if r.granted_at is not None else r.requested_at
    ends = [r.preempt_at] if r.preempt_at is not None else []
    if r.expected_s is not None:
        ends.append(granted_at + r.expected_s)
    return Holding(
        r.id,
        r.pipeline,
        _amounts(r.resources),
        r.priority,
        granted_at,
        min(ends) if ends else None,
        r.preemptible,
        r.preempt_at is not None,
    )


def _admit_waiting(
    s: Session,
    pool: Pool,
    now: float,
    new: QuotaLease | None = None,
    end: tuple[str, str, str] | None = None,
) -> list[QuotaLease]:
    """The scheduling pass (see the module docstring). The pool must be locked by the caller.
    Ends the lease ``end`` = (id, status, reason) if given, reclaims expired rows, admits what
    may be admitted (backfilling around a blocked head), marks leases to preempt, writes one
    event per change, and returns the rows admitted. ``new`` is a request not yet in the table
    (the fast path of submit)."""
    rows = list(
        s.scalars(
            select(QuotaLease)
            .where(QuotaLease.pool == pool.name, QuotaLease.status.in_(ACTIVE))
            .with_for_update()
        )
    )
    held = [r for r in rows if r.status == "held"]
    total: Amounts = {r: 0.0 for r in pool.capacity}
    for r in held:
        total = add(total, _amounts(r.resources))
    for r in rows:
        if end is not None and r.id == end[0]:
            was_held = r.status == "held"
            status = end[1]
            if was_held and r.preempt_at is not None and status == "released":
                status = "preempted"  # its holder stopped as asked: recorded as preempted
            r.status, r.ended_at = status, now
            r.reason = r.reason if status == "preempted" else end[2]
            if was_held:
                total = subtract(total, _amounts(r.resources))
                _event(s, pool.name, r.id, status, now, total)
    for r in rows:
        if r.status in ACTIVE and r.expires_at < now:
            was_held = r.status == "held"
            if was_held and r.preempt_at is not None:
                r.status = "preempted"  # the holder stopped by its fencing deadline
            else:
                r.status, r.reason = "expired", "no heartbeat before expiry"
            r.ended_at = now
            if was_held:
                total = subtract(total, _amounts(r.resources))
                _event(s, pool.name, r.id, r.status, now, total)
    usage: dict[str, Amounts] = {}
    for r in rows:
        if r.status == "held":
            usage[r.pipeline] = add(usage.get(r.pipeline, {}), _amounts(r.resources))
    waiting = [r for r in rows if r.status == "waiting"]
    if new is not None:
        waiting.append(new)
    admitted: list[QuotaLease] = []
    while waiting:
        candidates = _candidates(pool, waiting, usage)
        # pipelines waiting for capacity they are guaranteed (within their share)
        entitled = {c[1].pipeline for c in candidates if first_excess(c[2], c[3].share) is None}
        chosen = None
        reservation: Reservation | None = None
        head: QuotaLease | None = None
        for _key, r, after, member in candidates:
            others_wait = bool(entitled - {r.pipeline})
            if others_wait and first_excess(after, member.share) is not None:
                continue  # borrowing above its share only while nobody else waits for theirs
            wanted = _amounts(r.resources)
            if head is None:
                if fits(total, wanted, pool.capacity):
                    chosen = (r, after)
                    break
                # the next in order does not fit: it is the head; others pass it only by
                # backfill, which never delays its expected start
                head = r
                reservation = _head_reservation(pool, r, rows, total, now)
                if reservation is None:
                    break
                continue
            assert reservation is not None
            end_at = now + r.expected_s if r.expected_s is not None else None
            if may_backfill(wanted, end_at, reservation, total, pool.capacity):
                chosen = (r, after)
                break
        if chosen is None:
            break
        r, after = chosen
        waiting.remove(r)
        r.status, r.granted_at = "held", now
        r.heartbeat_at, r.expires_at = now, max(r.expires_at, now)
        r.fence = _next_fence(s, pool.name)
        usage[r.pipeline] = after
        total = add(total, _amounts(r.resources))
        if r is new:
            s.add(new)
            rows.append(new)
        _event(s, pool.name, r.id, "granted", now, total)
        admitted.append(r)
    if new is not None and new.status == "waiting":
        s.add(new)
    if waiting and pool.policy.preemption != "never":
        _preempt(s, pool, now, [r for r in rows if r.status == "held"], waiting, usage, total)
    return admitted


def _candidates(
    pool: Pool, waiting: list[QuotaLease], usage: dict[str, Amounts]
) -> list[tuple[tuple[int, float, float, str], QuotaLease, Amounts, Member]]:
    """The waiting requests within their pipeline's cap, in admission order (with each one's
    pipeline usage once admitted, and its member terms)."""
    candidates = []
    for r in waiting:
        member = pool.member(r.pipeline)
        after = add(usage.get(r.pipeline, {}), _amounts(r.resources))
        if first_excess(after, member.cap) is None:  # within its own cap: really waiting
            key = (
                -r.priority,
                dominant_share(usage.get(r.pipeline, {}), pool.capacity, member.weight),
                r.requested_at,
                r.id,
            )
            candidates.append((key, r, after, member))
    candidates.sort(key=lambda c: c[0])
    return candidates


def _head_reservation(
    pool: Pool, head: QuotaLease, rows: list[QuotaLease], total: Amounts, now: float
) -> Reservation | None:
    """The blocked head's reservation for backfill, None when nothing may pass it (backfill
    off, or its start cannot be estimated). The head's promised start is the earliest shadow
    time computed for it; a request is backfilled by its end only if it ends by then, and once
    the promise is past (estimates were short), only into the extra capacity: so the head waits
    at most for the leases held when its promise fell due (see docs/design.md, "Backfill")."""
    if not pool.policy.backfill:
        return None
    holdings = [_holding(r) for r in rows if r.status == "held"]
    found = shadow(holdings, total, _amounts(head.resources), pool.capacity, now)
    if found is None:
        return None
    promised = head.start_promised_at
    if promised is None or found.start_at < promised:
        head.start_promised_at = promised = found.start_at
    if now >= promised:
        return Reservation(now, found.extra)  # overdue: only what the head never needs
    return Reservation(min(found.start_at, promised), found.extra)


def _preempt(
    s: Session,
    pool: Pool,
    now: float,
    held: list[QuotaLease],
    waiting: list[QuotaLease],
    usage: dict[str, Amounts],
    total: Amounts,
) -> None:
    """Mark the leases to take back for the first waiting request (in admission order) that
    may reclaim capacity: one within its guaranteed share (policy ``borrowers`` and
    ``lower-priority``), or of higher priority than the victims (``lower-priority``). Each
    victim's holder learns it at its next heartbeat (:class:`~shipyard.errors.LeasePreempted`)
    and stops by ``preempt_at``; a holder that went silent loses the lease at its expiry."""
    holdings = [_holding(r) for r in held]
    freeing: Amounts = {}
    for h in holdings:
        if h.marked:
            freeing = add(freeing, h.resources)
    free = subtract(pool.capacity, total)
    borrowed: dict[str, Amounts] = {}
    for pipeline, used in usage.items():
        share = pool.member(pipeline).share
        borrowed[pipeline] = {r: max(0.0, v - share.get(r, 0.0)) for r, v in used.items()}
    candidates = _candidates(pool, waiting, usage)
    entitled = {c[1].pipeline for c in candidates if first_excess(c[2], c[3].share) is None}
    for _key, r, after, member in candidates:
        within_share = first_excess(after, member.share) is None
        if not within_share and entitled - {r.pipeline}:
            continue  # it would not be admitted before those anyway
        lower_than = r.priority if pool.policy.preemption == "lower-priority" else None
        if not within_share and lower_than is None:
            continue
        lacking = {
            k: v - free.get(k, 0.0) - freeing.get(k, 0.0)
            for k, v in _amounts(r.resources).items()
            if v - free.get(k, 0.0) - freeing.get(k, 0.0) > EPSILON
        }
        if not lacking:
            return  # it fits once the leases already being taken back have ended
        chosen = victims(
            holdings, lacking, borrowed if within_share else {}, r.pipeline, lower_than
        )
        if not chosen:
            continue
        why = (
            f"pipeline {r.pipeline!r} needs its guaranteed share of pool {pool.name!r}"
            if within_share
            else f"a request of priority {r.priority} from pipeline {r.pipeline!r} waits"
        )
        by_id = {row.id: row for row in held}
        grace = pool.policy.preemption_grace_s
        for h in chosen:
            row = by_id[h.id]
            row.preempt_at = now + grace
            row.reason = f"preempted: {why} (grace {grace:g}s)"
            _event(s, pool.name, row.id, "preempting", now, total)
        return


def _queued_runs(s: Session, pool: Pool, pipeline: str, run_id: str) -> set[str] | None:
    """The other runs of ``pipeline`` waiting in the pool's queue; None when ``run_id`` is in
    the pool already (holding or waiting: a run under way is not refused a further step) or
    the pool sets no limit for the pipeline."""
    if pool.queue_limit(pipeline) is None:
        return None
    active = s.execute(
        select(QuotaLease.run_id, QuotaLease.id, QuotaLease.status).where(
            QuotaLease.pool == pool.name,
            QuotaLease.pipeline == pipeline,
            QuotaLease.status.in_(ACTIVE),
        )
    ).all()
    if any((rid or lid) == run_id for rid, lid, _ in active):
        return None
    return {rid or lid for rid, lid, status in active if status == "waiting"}


def _next_fence(s: Session, pool: str) -> int:
    """The next fencing token of the pool (its row is locked by the caller)."""
    row = s.get(QuotaPool, pool)
    assert row is not None
    row.last_fence = (row.last_fence or 0) + 1
    return row.last_fence


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
                requested_at=now,
                heartbeat_at=now,
                expires_at=now + self.lease_ttl_s,
                expected_s=request.expected_s,
                preemptible=request.preemptible,
            )
            queued = _queued_runs(s, pool, request.pipeline, request.run_id or row.id)
            _admit_waiting(s, pool, now, new=row)
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
            _admit_waiting(s, pool, now)
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
            _admit_waiting(s, pool, now, end=(lease_id, status, reason))


def held_total(s: Session, pool: Pool) -> Amounts:
    """What the pool's held leases add up to, per resource of the pool (and any other)."""
    rows = s.scalars(
        select(QuotaLease.resources).where(
            QuotaLease.pool == pool.name, QuotaLease.status == "held"
        )
    )
    total: Amounts = {r: 0.0 for r in pool.capacity}
    for resources in rows:
        total = add(total, _amounts(resources))
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
            _admit_waiting(s, pool, now)
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
            _admit_waiting(s, pool, clock.time(), end=(lease_id, status, reason))
            ended.append(lease_id)
    return ended


def pool_exists(store: Store, name: str) -> bool:
    with store.session() as s:
        return s.get(QuotaPool, name) is not None


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
