"""Row-level helpers of the scheduling pass: the amounts on a lease row, the event a change
writes, a held row as backfill and preemption see it, the waiting rows in admission order, the
runs a pipeline has queued and the pool's next fencing token.

They read and write ``quota_leases`` rows inside the pass's transaction (the pool locked by the
caller, :mod:`shipyard.quota.queue`); they decide nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from shipyard.quantities import Amounts
from shipyard.quota.pools import Member, Pool, dominant_share
from shipyard.quota.resources import add, first_excess
from shipyard.quota.scheduling import Holding
from shipyard.statuses import LEASE_ACTIVE as ACTIVE
from shipyard.store.quota import QuotaEvent, QuotaLease, QuotaPool

Candidate = tuple[tuple[int, float, float, str], QuotaLease, Amounts, Member]
"""A waiting row in admission order: (its sort key, the row, its pipeline's usage once it is
admitted, its pipeline's terms)."""


def amounts_of(raw: Mapping[str, object]) -> Amounts:
    return {r: float(v) for r, v in raw.items()}  # type: ignore[arg-type]


def record_event(
    s: Session, pool: str, lease_id: str, kind: str, now: float, held: Amounts
) -> None:
    s.add(QuotaEvent(pool=pool, lease_id=lease_id, kind=kind, ts=now, held_total=dict(held)))


def holding_of(r: QuotaLease) -> Holding:
    granted_at = r.granted_at if r.granted_at is not None else r.requested_at
    ends = [r.preempt_at] if r.preempt_at is not None else []
    if r.expected_s is not None:
        ends.append(granted_at + r.expected_s)
    return Holding(
        r.id,
        r.pipeline,
        amounts_of(r.resources),
        r.priority,
        granted_at,
        min(ends) if ends else None,
        r.preemptible,
        r.preempt_at is not None,
    )


def admission_order(
    pool: Pool, waiting: list[QuotaLease], usage: dict[str, Amounts]
) -> list[Candidate]:
    """The waiting requests within their pipeline's cap, in admission order (with each one's
    pipeline usage once admitted, and its member terms)."""
    candidates: list[Candidate] = []
    for r in waiting:
        member = pool.member(r.pipeline)
        after = add(usage.get(r.pipeline, {}), amounts_of(r.resources))
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


def queued_runs(s: Session, pool: Pool, pipeline: str, run_id: str) -> set[str] | None:
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


def next_fence(s: Session, pool: str) -> int:
    """The next fencing token of the pool (its row is locked by the caller)."""
    row = s.get(QuotaPool, pool)
    assert row is not None
    row.last_fence = (row.last_fence or 0) + 1
    return row.last_fence
