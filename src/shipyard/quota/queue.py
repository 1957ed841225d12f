"""The scheduling pass: one admission decision over a pool's queue, under the pool's lock.

The scheduling pass (:func:`admit_waiting`) admits waiting requests one at a time, each time in
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

Preemption (:mod:`shipyard.quota.preemption`) runs at the end of the pass, for what still waits.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from shipyard.quantities import Amounts
from shipyard.quota.lease_rows import (
    admission_order,
    amounts_of,
    holding_of,
    next_fence,
    record_event,
)
from shipyard.quota.pools import Pool
from shipyard.quota.preemption import mark_preemptions
from shipyard.quota.resources import add, first_excess, subtract
from shipyard.quota.scheduling import Reservation, backfill_end, fits, may_backfill, shadow
from shipyard.statuses import LEASE_ACTIVE as ACTIVE
from shipyard.store.quota import QuotaLease


def admit_waiting(
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
        total = add(total, amounts_of(r.resources))
    for r in rows:
        if end is not None and r.id == end[0]:
            was_held = r.status == "held"
            status = end[1]
            if was_held and r.preempt_at is not None and status == "released":
                status = "preempted"  # its holder stopped as asked: recorded as preempted
            r.status, r.ended_at = status, now
            r.reason = r.reason if status == "preempted" else end[2]
            if was_held:
                total = subtract(total, amounts_of(r.resources))
                record_event(s, pool.name, r.id, status, now, total)
    for r in rows:
        if r.status in ACTIVE and r.expires_at < now:
            was_held = r.status == "held"
            if was_held and r.preempt_at is not None:
                r.status = "preempted"  # the holder stopped by its fencing deadline
            else:
                r.status, r.reason = "expired", "no heartbeat before expiry"
            r.ended_at = now
            if was_held:
                total = subtract(total, amounts_of(r.resources))
                record_event(s, pool.name, r.id, r.status, now, total)
    usage: dict[str, Amounts] = {}
    for r in rows:
        if r.status == "held":
            usage[r.pipeline] = add(usage.get(r.pipeline, {}), amounts_of(r.resources))
    waiting = [r for r in rows if r.status == "waiting"]
    if new is not None:
        waiting.append(new)
    admitted: list[QuotaLease] = []
    while waiting:
        candidates = admission_order(pool, waiting, usage)
        # pipelines waiting for capacity they are guaranteed (within their share)
        entitled = {c[1].pipeline for c in candidates if first_excess(c[2], c[3].share) is None}
        chosen = None
        reservation: Reservation | None = None
        head: QuotaLease | None = None
        for _key, r, after, member in candidates:
            others_wait = bool(entitled - {r.pipeline})
            if others_wait and first_excess(after, member.share) is not None:
                continue  # borrowing above its share only while nobody else waits for theirs
            wanted = amounts_of(r.resources)
            if head is None:
                if fits(total, wanted, pool.capacity):
                    chosen = (r, after)
                    break
                # the next in order does not fit: it is the head; others pass it only by
                # backfill, which never delays its expected start
                head = r
                reservation = head_reservation(pool, r, rows, total, now)
                if reservation is None:
                    break
                continue
            assert reservation is not None
            end_at = backfill_end(now, r.expected_s)
            if may_backfill(wanted, end_at, reservation, total, pool.capacity):
                chosen = (r, after)
                break
        if chosen is None:
            break
        r, after = chosen
        waiting.remove(r)
        r.status, r.granted_at = "held", now
        r.heartbeat_at, r.expires_at = now, max(r.expires_at, now)
        r.fence = next_fence(s, pool.name)
        usage[r.pipeline] = after
        total = add(total, amounts_of(r.resources))
        if r is new:
            s.add(new)
            rows.append(new)
        record_event(s, pool.name, r.id, "granted", now, total)
        admitted.append(r)
    if new is not None and new.status == "waiting":
        s.add(new)
    if waiting and pool.policy.preemption != "never":
        mark_preemptions(
            s, pool, now, [r for r in rows if r.status == "held"], waiting, usage, total
        )
    return admitted


def head_reservation(
    pool: Pool, head: QuotaLease, rows: list[QuotaLease], total: Amounts, now: float
) -> Reservation | None:
    """The blocked head's reservation for backfill, None when nothing may pass it (backfill
    off, or its start cannot be estimated). The head's promised start is the earliest shadow
    time computed for it; a request is backfilled by its end only if it ends by then, and once
    the promise is past (estimates were short), only into the extra capacity: so the head waits
    at most for the leases held when its promise fell due (see docs/design.md, "Backfill")."""
    if not pool.policy.backfill:
        return None
    holdings = [holding_of(r) for r in rows if r.status == "held"]
    found = shadow(holdings, total, amounts_of(head.resources), pool.capacity, now)
    if found is None:
        return None
    promised = head.start_promised_at
    if promised is None or found.start_at < promised:
        head.start_promised_at = promised = found.start_at
    if now >= promised:
        return Reservation(now, found.extra)  # overdue: only what the head never needs
    return Reservation(min(found.start_at, promised), found.extra)
