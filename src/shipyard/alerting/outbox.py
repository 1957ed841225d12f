"""The outbox: notifications are rows, delivered by the loop until a receiver takes them.

A notification is written in the same transaction as the decision that made it
(:func:`shipyard.alerting.grouping.dispatch`). Delivery then, per pass:

1. claims due rows in a short transaction (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so two
   senders never take the same row), each for ``timeout + CLAIM_MARGIN_S``, with the sender's
   id in ``claimed_by``;
2. sends each receiver's rows in order, receivers side by side (one thread each, so a hung
   webhook holds up neither e-mail nor Slack). Just before each send, the row's claim is
   renewed in a transaction that checks the sender still owns it (another sender may have
   claimed it once the first claim lapsed), and ``send_window()`` says how many seconds this
   sender may still spend (the daemon's fencing: what is left of its leader lease); the
   attempt's deadline is the receiver's timeout, shortened to fit that window, and a window
   too short for any attempt stops the pass;
3. sends with its idempotency key in the ``Idempotency-Key`` header, within that deadline
   (:func:`shipyard.alerting.receivers.send`);
4. records the outcome: delivered; failed for good (4xx: not retried, reason kept); or
   retried after ``min(BACKOFF_BASE_S × 2^(attempts−1), BACKOFF_MAX_S)`` — exponential backoff
   as in Alertmanager's notifier — until ``GIVE_UP_AFTER_S`` after it was written. A receiver
   that fails for now is not tried again in this pass: its other rows wait for the same retry
   time (one timeout per pass, not one per row).

A sender killed between 3 and 4 leaves a claimed row whose claim expires: it is sent again
(at-least-once; a receiver may dedupe on the idempotency key).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select

from shipyard.alerting.receivers import DEADLINE_GRACE_S, Delivery, Receiver, send
from shipyard.clock import Clock
from shipyard.statuses import NotificationStatus
from shipyard.store import Store
from shipyard.store.alerting import NotificationRecord
from shipyard.store.base import new_id

BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 300.0
GIVE_UP_AFTER_S = 24 * 3600.0
CLAIM_MARGIN_S = 5.0
MAX_PARALLEL_RECEIVERS = 8
MIN_ATTEMPT_S = 0.5
"""An attempt shorter than this is not started: the sender's window is closing."""

Sender = Callable[[Receiver, Mapping[str, Any], str], Delivery]
SendWindow = Callable[[], float]


@dataclass(frozen=True)
class Outcome:
    notification_id: str
    receiver: str
    status: str
    attempts: int
    detail: str


def backoff_s(attempts: int) -> float:
    return float(min(BACKOFF_BASE_S * 2 ** max(attempts - 1, 0), BACKOFF_MAX_S))


def _unbounded() -> float:
    return math.inf


def hold_s(receiver: Receiver | None) -> float:
    """How long a claim lasts: longer than any attempt at this receiver can take."""
    return (receiver.timeout_s if receiver else 0.0) + DEADLINE_GRACE_S + CLAIM_MARGIN_S


def deliver_due(
    store: Store,
    receivers: Mapping[str, Receiver],
    clock: Clock,
    *,
    limit: int = 100,
    sender: Sender = send,
    send_window: SendWindow = _unbounded,
) -> list[Outcome]:
    """Attempt every notification that is due now; returns what became of each."""
    me = new_id()
    claimed = _claim_due(store, receivers, clock.time(), limit, me)
    by_receiver: dict[str, list[str]] = {}
    for notification_id, name in claimed:
        by_receiver.setdefault(name, []).append(notification_id)

    def deliver(name: str, ids: list[str]) -> list[Outcome]:
        try:
            return _deliver_to(
                store, receivers.get(name), name, ids, clock, me, sender, send_window
            )
        finally:
            _release(store, ids, me)  # whatever this pass did not reach

    if len(by_receiver) <= 1:
        return [o for name, ids in by_receiver.items() for o in deliver(name, ids)]
    with ThreadPoolExecutor(min(len(by_receiver), MAX_PARALLEL_RECEIVERS)) as pool:
        done = [pool.submit(deliver, name, ids) for name, ids in by_receiver.items()]
        return [o for future in done for o in future.result()]


def _claim_due(
    store: Store, receivers: Mapping[str, Receiver], now: float, limit: int, me: str
) -> list[tuple[str, str]]:
    with store.session(immediate=True) as session:
        rows = list(
            session.scalars(
                select(NotificationRecord)
                .where(
                    NotificationRecord.status == NotificationStatus.PENDING,
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
            row.claimed_until = now + hold_s(receivers.get(row.receiver))
            row.claimed_by = me
        return [(r.id, r.receiver) for r in rows]


def _deliver_to(
    store: Store,
    receiver: Receiver | None,
    name: str,
    ids: list[str],
    clock: Clock,
    me: str,
    sender: Sender,
    send_window: SendWindow,
) -> list[Outcome]:
    """One receiver's rows in order, until one fails for now (or sending is no longer ours)."""
    outcomes = []
    for position, notification_id in enumerate(ids):
        target = None
        if receiver is not None:
            target = _within_window(receiver, send_window())
            if target is None:
                break
        message = _renew_claim(store, notification_id, me, clock.time(), hold_s(target))
        if message is None:
            continue
        payload, key = message
        if target is None:
            result = Delivery(False, False, f"receiver {name!r} is no longer configured")
        else:
            result = sender(target, payload, key)
        outcome, retry_at = _record(store, notification_id, result, clock.time())
        outcomes.append(outcome)
        if retry_at is not None:
            _defer(store, ids[position + 1 :], me, retry_at)
            break
    return outcomes


def _within_window(receiver: Receiver, window_s: float) -> Receiver | None:
    """The receiver with its timeout shortened to end within the window; None: no time left."""
    timeout = min(receiver.timeout_s, window_s - DEADLINE_GRACE_S)
    if timeout < MIN_ATTEMPT_S:
        return None
    if timeout < receiver.timeout_s:
        return dataclasses.replace(receiver, timeout_s=timeout)
    return receiver


def _renew_claim(
    store: Store, notification_id: str, me: str, now: float, hold: float
) -> tuple[dict[str, Any], str] | None:
    """The row's payload and key if it is still this sender's to send; its claim renewed."""
    with store.session(immediate=True) as session:
        row = session.get(
            NotificationRecord, notification_id, with_for_update=True, populate_existing=True
        )
        if row is None or row.status != NotificationStatus.PENDING or row.claimed_by != me:
            return None
        row.claimed_until = now + hold
        return dict(row.payload), row.idempotency_key


def _record(
    store: Store, notification_id: str, result: Delivery, now: float
) -> tuple[Outcome, float | None]:
    """Store what the attempt came to; the second value: when to retry, if it will be."""
    retry_at = None
    with store.session(immediate=True) as session:
        row = session.get(NotificationRecord, notification_id, with_for_update=True)
        assert row is not None
        row.attempts += 1
        row.claimed_until = None
        row.claimed_by = None
        row.last_error = None if result.ok else result.detail
        if result.ok:
            row.status = NotificationStatus.DELIVERED
            row.delivered_at = now
        elif not result.retry:
            row.status = NotificationStatus.FAILED
        elif now - row.created_at >= GIVE_UP_AFTER_S:
            row.status = NotificationStatus.FAILED
            row.last_error = f"gave up after {row.attempts} attempts: {result.detail}"
        else:
            retry_at = row.next_attempt_at = now + backoff_s(row.attempts)
        outcome = Outcome(row.id, row.receiver, row.status, row.attempts, result.detail)
    return outcome, retry_at


def _defer(store: Store, ids: list[str], me: str, until: float) -> None:
    """The receiver just failed: its other rows wait until its next retry (no attempt made)."""
    if not ids:
        return
    with store.session(immediate=True) as session:
        for row in session.scalars(
            select(NotificationRecord)
            .where(NotificationRecord.id.in_(ids), NotificationRecord.claimed_by == me)
            .with_for_update()
        ):
            row.next_attempt_at = max(row.next_attempt_at, until)


def _release(store: Store, ids: list[str], me: str) -> None:
    """Give up this sender's claims on rows it did not send, so another sender need not wait."""
    with store.session(immediate=True) as session:
        for row in session.scalars(
            select(NotificationRecord)
            .where(NotificationRecord.id.in_(ids), NotificationRecord.claimed_by == me)
            .with_for_update()
        ):
            row.claimed_until = None
            row.claimed_by = None


def pending_count(store: Store) -> int:
    with store.session() as session:
        return len(
            list(
                session.scalars(
                    select(NotificationRecord.id).where(
                        NotificationRecord.status == NotificationStatus.PENDING
                    )
                )
            )
        )
