"""The preemption choice: which held leases a pool takes back for a waiting request.

**Preemption** (the pool's ``preemption``: ``never`` by default, ``borrowers``,
``lower-priority``). When a request that may reclaim capacity waits — one within its
pipeline's guaranteed share, or (``lower-priority``) one of higher priority — the pass marks
the held leases to take back (``preempt_at`` = now + ``preemption_grace_s``), youngest and
lowest priority first, only as many as free what the request lacks — and, where the pool's room
is given back only when a holder has stopped (``quota_release: on-terminal``, the default), none
while the leases expected to end within the grace period free enough by themselves (a victim
marked now would stop no sooner; its work would be lost for nothing). With ``on-terminating``
the victims' room is free at once, and the request starts in the same pass. A marked lease is no
longer renewed: its holder's next heartbeat raises :class:`~shipyard.errors.LeasePreempted`,
the holder sends SIGTERM, then SIGKILL at ``preempt_at``, and gives the lease back, which is
recorded ``preempted`` (not ``released``, not failed). A holder that went silent keeps the
capacity until its lease expires, as fencing demands (it stopped itself by then); so a member
gets its share back within the grace period plus one renewal interval from a live holder.

The choice of victims among the eligible leases is :func:`shipyard.quota.scheduling.victims`;
this module decides for whom, and marks them on their rows inside the scheduling pass's
transaction (:mod:`shipyard.quota.queue`).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from shipyard.quantities import Amounts
from shipyard.quota.lease_rows import admission_order, amounts_of, holding_of, record_event
from shipyard.quota.pools import Pool
from shipyard.quota.resources import EPSILON, add, first_excess, subtract
from shipyard.quota.scheduling import Holding, shadow, victims
from shipyard.store.quota import QuotaLease


def mark_preemptions(
    s: Session,
    pool: Pool,
    now: float,
    held: list[QuotaLease],
    waiting: list[QuotaLease],
    usage: dict[str, Amounts],
    total: Amounts,
) -> bool:
    """Mark the leases to take back for the first waiting request (in admission order) that
    may reclaim capacity: one within its guaranteed share (policy ``borrowers`` and
    ``lower-priority``), or of higher priority than the victims (``lower-priority``). Each
    victim's holder learns it at its next heartbeat (:class:`~shipyard.errors.LeasePreempted`)
    and stops by ``preempt_at``; a holder that went silent loses the lease at its expiry.
    True when it marked any."""
    holdings = [holding_of(r) for r in held]
    freeing: Amounts = {}
    for h in holdings:
        if h.marked:
            freeing = add(freeing, h.resources)
    free = subtract(pool.capacity, total)
    borrowed: dict[str, Amounts] = {}
    for pipeline, used in usage.items():
        share = pool.member(pipeline).share
        borrowed[pipeline] = {r: max(0.0, v - share.get(r, 0.0)) for r, v in used.items()}
    candidates = admission_order(pool, waiting, usage)
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
            for k, v in amounts_of(r.resources).items()
            if v - free.get(k, 0.0) - freeing.get(k, 0.0) > EPSILON
        }
        if not lacking:
            return False  # it fits once the leases already being taken back have ended
        if not pool.policy.releases_on_terminating and frees_in_time(
            holdings, total, amounts_of(r.resources), pool, now
        ):
            return False  # the leases ending by themselves free it before a victim would stop
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
        for h in chosen:
            take_back(s, pool.name, by_id[h.id], why, pool.policy.preemption_grace_s, now, total)
        return True
    return False


def take_back(
    s: Session, pool: str, row: QuotaLease, why: str, grace_s: float, now: float, total: Amounts
) -> None:
    """Mark a held lease to be taken back by ``now + grace_s``: its holder learns it at its next
    heartbeat (:class:`~shipyard.errors.LeasePreempted`), stops, and its end is recorded
    ``preempted`` with this reason. Borrowers preempted for a member's share and backfilled
    leases yielding to a request they passed (:mod:`shipyard.quota.queue`) go this one way."""
    row.preempt_at = now + grace_s
    row.reason = f"preempted: {why} (grace {grace_s:g}s)"
    record_event(s, pool, row.id, "preempting", now, total)


def frees_in_time(
    holdings: list[Holding], total: Amounts, wanted: Amounts, pool: Pool, now: float
) -> bool:
    """Whether the held leases expected to end within the grace period (those being taken back
    end by their ``preempt_at``) free enough for ``wanted`` by then: a victim marked now would
    stop no sooner. A lease already past its expected end is not counted (it overran: when it
    ends is not known)."""
    ahead = [h for h in holdings if h.end_at is not None and h.end_at >= now]
    found = shadow(ahead, total, wanted, pool.capacity, now)
    return found is not None and found.start_at <= now + pool.policy.preemption_grace_s
