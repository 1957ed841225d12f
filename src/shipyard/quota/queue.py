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
but does not fit is the *head*: with the pool's ``backfill`` off, it stops the pass (nothing
behind it jumps ahead); with it on (the default), a request behind it may start *out of turn*
(EASY backfill, :mod:`shipyard.quota.scheduling`, decides which), and such a lease **yields**:
the pass first walks strict order with only the in-turn leases counted (:func:`in_turn`), and
when a request that a lease passed fits there but not in the room out-of-turn leases hold,
just enough of them are taken back (``backfill_grace_s``); one whose own turn comes is
promoted. So backfill never starts a request later than strict order would
(docs/design.md, "Backfill").

Preemption (:mod:`shipyard.quota.preemption`) runs at the end of the pass, for what still waits.
Where the pool frees a taken-back lease's room when its holder is told to stop (``quota_release:
on-terminating``, :func:`holding_room`), the pass then admits what that room lets start.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import and_, or_, select, true
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
from shipyard.quota.preemption import mark_preemptions, take_back
from shipyard.quota.resources import EPSILON, add, first_excess, subtract
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
    mine = QuotaLease.pool == pool.name
    rows = list(
        s.scalars(
            select(QuotaLease)
            .where(
                or_(  # each term with the pool, so that each uses its index (a multi-index OR)
                    and_(mine, QuotaLease.status.in_(ACTIVE)),
                    # ended early by backfill, still running or waiting in strict order's account
                    and_(mine, QuotaLease.in_turn_until > now),
                    and_(mine, QuotaLease.out_of_turn == true(), QuotaLease.status == "released"),
                )
            )
            .with_for_update()
        )
    )
    for r in rows:
        if end is not None and r.id == end[0] and r.status in ACTIVE:
            was_held = r.status == "held"
            status = end[1]
            if was_held and r.preempt_at is not None and status == "released":
                status = "preempted"  # its holder stopped as asked: recorded as preempted
            r.status, r.ended_at = status, now
            r.reason = r.reason if status == "preempted" else end[2]
            if was_held and status == "released":
                end_in_turn(r, now)
            if was_held:
                record_event(s, pool.name, r.id, status, now, held_total(pool, rows))
    for r in rows:
        if r.status in ACTIVE and r.expires_at < now:
            was_held = r.status == "held"
            if was_held and r.preempt_at is not None:
                r.status = "preempted"  # the holder stopped by its fencing deadline
            else:
                r.status, r.reason = "expired", "no heartbeat before expiry"
            r.ended_at = now
            if was_held:
                record_event(s, pool.name, r.id, r.status, now, held_total(pool, rows))
    waiting = [r for r in rows if r.status == "waiting"]
    if new is not None:
        waiting.append(new)
    admitted: list[QuotaLease] = []
    while True:  # one decision at a time: each changes the order (fair share) of the rest
        total = held_total(pool, rows)
        turn = in_turn(s, pool, now, rows, waiting, total)
        chosen = turn.admit
        if chosen is None and turn.done:
            continue  # a promotion or a yield: walk again
        if chosen is None and pool.policy.backfill:
            chosen = backfill_next(pool, now, rows, waiting, turn, total)
        if chosen is None:
            break
        r, out_of_turn = chosen
        waiting.remove(r)
        r.status, r.granted_at, r.out_of_turn = "held", now, out_of_turn
        r.in_turn_since = None if out_of_turn else now
        r.heartbeat_at, r.expires_at = now, max(r.expires_at, now)
        r.fence = next_fence(s, pool.name)
        if r is new:
            s.add(new)
            rows.append(new)
        record_event(s, pool.name, r.id, "granted", now, add(total, amounts_of(r.resources)))
        admitted.append(r)
    if new is not None and new.status == "waiting":
        s.add(new)
    if waiting and pool.policy.preemption != "never":
        held = holding_room(pool, rows)
        total = amounts_held(pool, held)
        marked = mark_preemptions(s, pool, now, held, waiting, usage_of(held), total)
        if marked and pool.policy.releases_on_terminating:
            # the room of the leases just marked is free now: admit what it lets start
            admitted += admit_waiting(s, pool, now)
    return admitted


def holding_room(pool: Pool, rows: list[QuotaLease]) -> list[QuotaLease]:
    """The rows that count against the pool's capacity: the held leases, less those being
    taken back where the pool frees a lease's room when its holder is told to stop
    (``quota_release: on-terminating``; with ``on-terminal`` they count until they stop)."""
    releases = pool.policy.releases_on_terminating
    return [r for r in rows if r.status == "held" and not (releases and r.preempt_at is not None)]


def held_total(pool: Pool, rows: list[QuotaLease]) -> Amounts:
    """What the :func:`holding_room` rows hold, per resource of the pool."""
    return amounts_held(pool, holding_room(pool, rows))


def amounts_held(pool: Pool, held: list[QuotaLease]) -> Amounts:
    """What ``held`` holds, per resource of the pool."""
    total: Amounts = {r: 0.0 for r in pool.capacity}
    for r in held:
        total = add(total, amounts_of(r.resources))
    return total


def end_in_turn(r: QuotaLease, now: float) -> None:
    """Strict order's account of a lease that ended as released: one promoted after it had
    started out of turn would, in strict order, have started at its promotion and still run
    (``in_turn_until``: its promotion plus the time it ran); one that ended while out of turn
    stays a candidate of the in-turn walk (its flag kept) until its place there comes. So the
    in-turn walk is strict order itself, not strict order with some work done early: with
    an order that moves with usage (fair share, priority), work done early can let requests
    start before a later arrival that strict order would have let pass them."""
    if r.out_of_turn or r.in_turn_since is None or r.granted_at is None:
        return
    until = r.in_turn_since + (now - r.granted_at)
    if until > now:
        r.in_turn_until = until


def usage_of(held: list[QuotaLease]) -> dict[str, Amounts]:
    """What each pipeline holds, over the given held rows."""
    usage: dict[str, Amounts] = {}
    for r in held:
        usage[r.pipeline] = add(usage.get(r.pipeline, {}), amounts_of(r.resources))
    return usage


@dataclass
class Turn:
    """What one walk in strict order found: the request to grant in turn (``admit``), or
    ``done`` when it promoted a lease or marked leases to yield (then walk again); else the
    requests that wait in turn for room being given back (``claimed``) and the pool's total
    once every lease being taken back has stopped and they have started (``committed``)."""

    admit: tuple[QuotaLease, bool] | None = None
    done: bool = False
    claimed: set[str] = field(default_factory=set)
    committed: Amounts = field(default_factory=dict)


def in_turn(
    s: Session,
    pool: Pool,
    now: float,
    rows: list[QuotaLease],
    waiting: list[QuotaLease],
    total: Amounts,
) -> Turn:
    """Walk the queue in strict admission order as if nothing had been backfilled: usage and
    totals count only the held leases granted in turn, and the leases backfill granted out of
    turn take part as candidates in their place in that order. The first candidate that does
    not fit the in-turn accounting ends the walk (strict order: nothing passes it in turn).
    One that fits is, in order: an out-of-turn lease, promoted (it keeps running, now in
    turn); a request that fits the real free capacity too, returned to be granted; a request
    that fits only once out-of-turn leases give their room back: just enough of them (the
    latest in admission order first) are marked to stop within ``backfill_grace_s``, and it
    waits for them, its room claimed (later requests in the walk cannot take it). Leases that
    ran early count as strict order would see them (:func:`end_in_turn`).

    So a request never starts later than strict order would start it, given that every
    request before it started no later (see docs/design.md, "Backfill")."""
    held = holding_room(pool, rows)
    ended_early = [
        r
        for r in rows
        if r.status == "released"
        and not r.out_of_turn
        and r.in_turn_until is not None
        and r.in_turn_until > now
    ]
    in_turn_held = [r for r in held if not r.out_of_turn] + ended_early
    usage = usage_of(in_turn_held)
    in_turn_total: Amounts = {k: 0.0 for k in pool.capacity}
    for r in in_turn_held:
        in_turn_total = add(in_turn_total, amounts_of(r.resources))
    committed = dict(total)
    for r in held:
        if r.preempt_at is not None:  # being taken back: its room is coming free
            committed = subtract(committed, amounts_of(r.resources))
    turn = Turn(committed=committed)
    # out of turn: held (and not yielding), or done before their place in strict order came
    passing = [
        r
        for r in rows
        if r.out_of_turn
        and ((r.status == "held" and r.preempt_at is None) or r.status == "released")
    ]
    while True:
        rest = [r for r in waiting if r.id not in turn.claimed] + [
            r for r in passing if r.out_of_turn
        ]
        candidates = admission_order(pool, rest, usage)
        entitled = {c[1].pipeline for c in candidates if first_excess(c[2], c[3].share) is None}
        for _key, r, after, member in candidates:
            if entitled - {r.pipeline} and first_excess(after, member.share) is not None:
                continue  # borrowing above its share only while nobody else waits for theirs
            break
        else:
            return turn
        wanted = amounts_of(r.resources)
        if not fits(in_turn_total, wanted, pool.capacity):
            return turn  # the head in strict order
        if r.status == "held":
            r.out_of_turn, r.in_turn_since = False, now  # its turn came: it keeps running
            record_event(s, pool.name, r.id, "promoted", now, total)
            turn.done = True
            return turn
        if r.status == "released":  # done early: in strict order it would start only now
            assert r.ended_at is not None and r.granted_at is not None
            r.out_of_turn, r.in_turn_since = False, now
            r.in_turn_until = now + (r.ended_at - r.granted_at)
            turn.done = True
            return turn
        if fits(total, wanted, pool.capacity) and fits(turn.committed, wanted, pool.capacity):
            turn.admit = (r, False)
            return turn
        lacking = {
            k: v
            for k, v in subtract(add(turn.committed, wanted), pool.capacity).items()
            if v > EPSILON
        }
        if lacking:
            later = [c[1] for c in candidates if c[1].status == "held"]
            chosen = yielding(list(reversed(later)), lacking)
            if not chosen:
                return turn  # backfilled leases that cannot be taken back hold its room
            why = f"yielded to {describe(r)}, which it passed in the queue"
            for victim in chosen:
                take_back(s, pool.name, victim, why, pool.policy.backfill_grace_s, now, total)
            turn.done = True
            return turn
        turn.claimed.add(r.id)  # it starts once the leases being taken back have stopped
        turn.committed = add(turn.committed, wanted)
        in_turn_total = add(in_turn_total, wanted)
        usage[r.pipeline] = after


def yielding(latest_first: list[QuotaLease], lacking: Amounts) -> list[QuotaLease]:
    """The out-of-turn leases to take back so that ``lacking`` is freed, from those latest in
    admission order, and none that is not needed (a lease whose room the others already free
    is spared, the earliest in order first); [] when even all of them would not free it."""
    chosen: list[QuotaLease] = []
    freed: Amounts = {}
    for r in latest_first:
        if first_excess(lacking, freed) is None:
            break
        if not r.preemptible:
            continue
        resources = amounts_of(r.resources)
        if any(
            lacking.get(k, 0.0) > freed.get(k, 0.0) + EPSILON and v > 0
            for k, v in resources.items()
        ):
            chosen.append(r)
            freed = add(freed, resources)
    if first_excess(lacking, freed) is not None:
        return []
    for r in reversed(list(chosen)):  # the earliest in order first
        spared = subtract(freed, amounts_of(r.resources))
        if first_excess(lacking, spared) is None:
            chosen.remove(r)
            freed = spared
    return chosen


def describe(r: QuotaLease) -> str:
    """A request as a reason names it."""
    what = f"step {r.step!r} of pipeline {r.pipeline!r}" if r.step else f"pipeline {r.pipeline!r}"
    return f"{what} (lease {r.id})"


def backfill_next(
    pool: Pool,
    now: float,
    rows: list[QuotaLease],
    waiting: list[QuotaLease],
    turn: Turn,
    total: Amounts,
) -> tuple[QuotaLease, bool] | None:
    """The request to grant out of turn, behind the head of strict order, or None. A candidate
    must fit both what is free now and what is left once the requests waiting in turn have
    their room; beyond that EASY backfill decides (:func:`head_reservation`): it no longer
    protects the head (yielding does), but a request that would soon have to give its room
    back is not started, its work would be lost. Only a preemptible request is started out of
    turn: one that cannot be taken back could not yield. ``total``: what the held leases hold."""
    held = holding_room(pool, rows)
    usage = usage_of(held)
    candidates = admission_order(pool, [r for r in waiting if r.id not in turn.claimed], usage)
    entitled = {c[1].pipeline for c in candidates if first_excess(c[2], c[3].share) is None}
    reservation: Reservation | None = None
    for _key, r, after, member in candidates:
        if entitled - {r.pipeline} and first_excess(after, member.share) is not None:
            continue  # borrowing above its share only while nobody else waits for theirs
        wanted = amounts_of(r.resources)
        now_fits = fits(total, wanted, pool.capacity)
        if reservation is None:
            if now_fits and fits(turn.committed, wanted, pool.capacity):
                if r.preemptible:
                    return r, True
                continue
            staying = [h for h in held if h.preempt_at is None]
            reservation = head_reservation(pool, r, staying, turn.committed, now)
            if reservation is None:
                return None
            continue
        end_at = backfill_end(now, r.expected_s)
        if (
            r.preemptible
            and now_fits
            and may_backfill(wanted, end_at, reservation, turn.committed, pool.capacity)
        ):
            return r, True
    return None


def head_reservation(
    pool: Pool, head: QuotaLease, held: list[QuotaLease], total: Amounts, now: float
) -> Reservation | None:
    """The blocked head's reservation for backfill, None when nothing may pass it (backfill
    off, or its start cannot be estimated). The head's promised start is the earliest shadow
    time computed for it; a request is backfilled by its end only if it ends by then, and once
    the promise is past (estimates were short), only into the extra capacity: so the head waits
    at most for the leases held when its promise fell due (see docs/design.md, "Backfill")."""
    if not pool.policy.backfill:
        return None
    holdings = [holding_of(r) for r in held]
    found = shadow(holdings, total, amounts_of(head.resources), pool.capacity, now)
    if found is None:
        return None
    promised = head.start_promised_at
    if promised is None or found.start_at < promised:
        head.start_promised_at = promised = found.start_at
    if now >= promised:
        return Reservation(now, found.extra)  # overdue: only what the head never needs
    return Reservation(min(found.start_at, promised), found.extra)
