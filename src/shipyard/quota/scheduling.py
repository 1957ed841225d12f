"""Decisions beyond strict order: backfill around a blocked head, and whom to preempt.

Both are pure functions over what the scheduling pass (:mod:`shipyard.quota.admission`) has read
under the pool's lock; they decide, the pass writes.

**Backfill** is EASY backfilling (Lifka, "The ANL/IBM SP scheduling system", JSSPP 1995;
Mu'alem & Feitelson, "Utilization, predictability, workloads, and user runtime estimates in
scheduling the IBM SP2 with backfilling", IEEE TPDS 12(6), 2001): the first request in order that
does not fit (the *head*) gets a reservation at its *shadow time* — the earliest time at which
the held leases expected to have ended by then free enough for it — and a request behind it may
start now only if it fits now and either is expected to end by the shadow time, or fits in what
is left beside the head at the shadow time (the *extra*). A lease's expected end is its grant
plus its ``expected_s`` (the longest of its step's recent runs, at most the declared timeout).
A candidate's end is judged with an upper margin (:data:`BACKFILL_MARGIN` × ``expected_s``:
its next run may be the longest yet), the held leases' ends without one (an earlier shadow
time lets fewer pass); a candidate without an estimate passes only into the extra. A held lease
with no expected end never ends as far as backfill knows, so a head that needs its capacity has
no shadow time and nothing passes it. A request backfilled by this rule yields its room to the
requests it passed when strict order reaches them (:mod:`shipyard.quota.queue`): the rule
no longer guards the head's start, it keeps backfill from starting work soon taken back.

**Preemption** picks, for a request that waits and may reclaim, the held leases to take back:
youngest and lowest priority first (Kueue's order: "lower priority first, then the most
recently admitted", kueue.sigs.k8s.io, "Preemption"), only as many as free what the request
lacks, and none if even all the eligible ones would not free enough (a kill that admits nobody
is waste).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from shipyard.quota.resources import EPSILON, Amounts, add, first_excess, subtract

BACKFILL_MARGIN = 1.25
"""A backfill candidate is taken to run this many times its estimate: with the estimate the
longest of its last 10 runs, a next run longer than all of them (probability 1/11 for
exchangeable durations) must overrun by a quarter before it can delay the head."""


@dataclass(frozen=True)
class Holding:
    """A held lease as the pass sees it. ``end_at``: when it is expected to end (None: not
    known); ``marked``: already being preempted."""

    id: str
    pipeline: str
    resources: Amounts
    priority: int
    granted_at: float
    end_at: float | None
    preemptible: bool = True
    marked: bool = False


def fits(total: Amounts, wanted: Amounts, capacity: Amounts) -> bool:
    return first_excess(add(total, wanted), capacity) is None


@dataclass(frozen=True)
class Reservation:
    """The head's reservation: its shadow time, and what is free at that time beside it."""

    start_at: float
    extra: Amounts


def shadow(
    held: Iterable[Holding], total: Amounts, head: Amounts, capacity: Amounts, now: float
) -> Reservation | None:
    """When the head can start if every held lease ends at its expected end (an end already
    past counts as now), and the extra left beside it then; None when it needs capacity whose
    holders' ends are unknown."""
    free = subtract(capacity, total)
    ending = sorted((max(h.end_at, now), h.id, h.resources) for h in held if h.end_at is not None)
    for end_at, _id, resources in ending:
        free = add(free, resources)
        if first_excess(head, free) is None:
            return Reservation(end_at, subtract(free, head))
    return None


def backfill_end(now: float, expected_s: float | None) -> float | None:
    """When a request started now is taken to end, for backfill: its estimate with the upper
    margin; None without an estimate (it may then pass only into the extra)."""
    return None if expected_s is None else now + BACKFILL_MARGIN * expected_s


def may_backfill(
    wanted: Amounts,
    end_at: float | None,
    reservation: Reservation,
    total: Amounts,
    capacity: Amounts,
) -> bool:
    """Whether a request behind the head may start now without delaying the head's reserved
    start: it fits now, and it ends (``end_at``, from :func:`backfill_end`) by that start or
    needs only capacity the head leaves free then."""
    if not fits(total, wanted, capacity):
        return False
    if end_at is not None and end_at <= reservation.start_at:
        return True
    return first_excess(wanted, reservation.extra) is None


def victims(
    held: Sequence[Holding],
    lacking: Amounts,
    borrowed: dict[str, Amounts],
    requester: str,
    lower_than: int | None = None,
) -> list[Holding]:
    """The leases to take back so that ``lacking`` (what the waiting request needs beyond the
    free capacity and the leases already being taken back) is freed; [] when they cannot.

    Youngest and lowest priority first. A lease is eligible while its pipeline (not the
    requester) still holds more than its guaranteed share (``borrowed``: held minus share, per
    pipeline), or — with ``lower_than`` (policy ``lower-priority``) — when its priority is lower.
    """
    above = {p: dict(v) for p, v in borrowed.items()}
    order = sorted(
        (h for h in held if h.preemptible and not h.marked and h.pipeline != requester),
        key=lambda h: (h.priority, -h.granted_at, h.id),
    )
    chosen: list[Holding] = []
    freed: Amounts = {}
    for h in order:
        if first_excess(lacking, freed) is None:
            break
        borrowing = any(v > EPSILON for v in above.get(h.pipeline, {}).values())
        if not (borrowing or (lower_than is not None and h.priority < lower_than)):
            continue
        if not any(
            lacking.get(r, 0.0) > freed.get(r, 0.0) + EPSILON and v > 0
            for r, v in h.resources.items()
        ):
            continue  # frees nothing the request still lacks
        chosen.append(h)
        freed = add(freed, h.resources)
        above[h.pipeline] = subtract(above.get(h.pipeline, {}), h.resources)
    return chosen if first_excess(lacking, freed) is None else []
