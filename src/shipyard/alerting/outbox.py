"""The outbox: notifications are rows, delivered by the loop until a receiver takes them.

A notification is written in the same transaction as the decision that made it
(:func:`shipyard.alerting.grouping.dispatch`). Delivery then:

1. claims due rows in a short transaction (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so two
   senders never take the same row; a claim expires ``CLAIM_MARGIN_S`` after the receiver's
   timeout);
2. sends each outside any transaction, with its idempotency key in the ``Idempotency-Key`` header;
3. records the outcome: delivered; failed for good (4xx: not retried, reason kept); or
   retried after ``min(BACKOFF_BASE_S × 2^(attempts−1), BACKOFF_MAX_S)`` — exponential backoff
   as in Alertmanager's notifier — until ``GIVE_UP_AFTER_S`` after it was written.

A sender killed between 2 and 3 leaves a claimed row whose claim expires: it is sent again
(at-least-once; a receiver may dedupe on the idempotency key).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select

from shipyard.alerting.receivers import Delivery, Receiver, send
from shipyard.clock import Clock
from shipyard.store import Store
from shipyard.store.alerting import NotificationRecord

BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 300.0
GIVE_UP_AFTER_S = 24 * 3600.0
CLAIM_MARGIN_S = 5.0

Sender = Callable[[Receiver, Mapping[str, Any], str], Delivery]


@dataclass(frozen=True)
class Outcome:
    notification_id: str
    receiver: str
    status: str
    attempts: int
    detail: str


def backoff_s(attempts: int) -> float:
    return float(min(BACKOFF_BASE_S * 2 ** max(attempts - 1, 0), BACKOFF_MAX_S))


def deliver_due(
    store: Store,
    receivers: Mapping[str, Receiver],
    clock: Clock,
    *,
    limit: int = 100,
    sender: Sender = send,
) -> list[Outcome]:
    """Attempt every notification that is due now; returns what became of each."""
    now = clock.time()
    with store.session(immediate=True) as session:
        rows = list(
            session.scalars(
                select(NotificationRecord)
                .where(
                    NotificationRecord.status == "pending",
                    NotificationRecord.next_attempt_at <= now,
                    or_(
                        NotificationRecord.claimed_until.is_(None),
                        NotificationRecord.claimed_until < now,
                    ),
                )
                .order_by(NotificationRecord.created_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )
        for row in rows:
            receiver = receivers.get(row.receiver)
            row.claimed_until = now + (receiver.timeout_s if receiver else 0.0) + CLAIM_MARGIN_S
        claimed = [(r.id, r.receiver, dict(r.payload), r.idempotency_key) for r in rows]
    outcomes = []
    for notification_id, name, payload, key in claimed:
        receiver = receivers.get(name)
        if receiver is None:
            result = Delivery(False, False, f"receiver {name!r} is no longer configured")
        else:
            result = sender(receiver, payload, key)
        outcomes.append(_record(store, notification_id, result, clock.time()))
    return outcomes


def _record(store: Store, notification_id: str, result: Delivery, now: float) -> Outcome:
    with store.session(immediate=True) as session:
        row = session.get(NotificationRecord, notification_id)
        assert row is not None
        row.attempts += 1
        row.claimed_until = None
        row.last_error = None if result.ok else result.detail
        if result.ok:
            row.status = "delivered"
            row.delivered_at = now
        elif not result.retry:
            row.status = "failed"
        elif now - row.created_at >= GIVE_UP_AFTER_S:
            row.status = "failed"
            row.last_error = f"gave up after {row.attempts} attempts: {result.detail}"
        else:
            row.next_attempt_at = now + backoff_s(row.attempts)
        return Outcome(row.id, row.receiver, row.status, row.attempts, result.detail)


def pending_count(store: Store) -> int:
    with store.session() as session:
        return len(
            list(
                session.scalars(
                    select(NotificationRecord.id).where(NotificationRecord.status == "pending")
                )
            )
        )
