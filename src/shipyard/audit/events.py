"""Reading the audit chain: events as frozen views, filtered and paged newest first.

Pages are keyed by ``seq`` (``before``), not by offset, so a page stays the same while new
events are appended, and the server can hand the next page's key to its client as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from shipyard.errors import InvalidInput
from shipyard.store import Store
from shipyard.store.tables import AuditEvent

MAX_LIMIT = 1000


@dataclass(frozen=True)
class Event:
    """One event of the chain, as written."""

    seq: int
    time: float
    actor: str
    mode: str
    action: str
    subject_kind: str
    subject_id: str
    details: dict[str, Any]
    prev_hash: str
    hash: str

    @classmethod
    def of(cls, row: AuditEvent) -> Event:
        return cls(
            row.seq or 0,
            row.ts,
            row.actor,
            row.mode or "",
            row.action,
            row.subject_kind,
            row.subject_id,
            dict(row.detail or {}),
            row.prev_hash or "",
            row.hash or "",
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": self.time,
            "actor": self.actor,
            "mode": self.mode,
            "action": self.action,
            "subject": {"kind": self.subject_kind, "id": self.subject_id},
            "details": self.details,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


@dataclass(frozen=True)
class Page:
    events: tuple[Event, ...]
    """Newest first."""
    next_before: int | None
    """Pass as ``before`` for the next (older) page; None when this page is the last."""


def list_events(
    store: Store,
    *,
    action: str | None = None,
    actor: str | None = None,
    subject_kind: str | None = None,
    subject_id: str | None = None,
    since: float | None = None,
    before: int | None = None,
    limit: int = 50,
) -> Page:
    """The chain's events that match every filter given, newest first, at most ``limit``.

    ``action`` is a name (``model.alias``) or a family ending in ``*`` (``rollout.*``);
    ``since`` an epoch time; ``before`` a ``seq`` (the previous page's ``next_before``).
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit {limit}: between 1 and {MAX_LIMIT}")
    query = select(AuditEvent).where(AuditEvent.seq.is_not(None))
    if action:
        if action.endswith("*"):
            query = query.where(AuditEvent.action.startswith(action[:-1], autoescape=True))
        else:
            query = query.where(AuditEvent.action == action)
    if actor is not None:
        query = query.where(AuditEvent.actor == actor)
    if subject_kind is not None:
        query = query.where(AuditEvent.subject_kind == subject_kind)
    if subject_id is not None:
        query = query.where(AuditEvent.subject_id == subject_id)
    if since is not None:
        query = query.where(AuditEvent.ts >= since)
    if before is not None:
        query = query.where(AuditEvent.seq < before)
    with store.session(readonly=True) as s:
        rows = list(s.scalars(query.order_by(AuditEvent.seq.desc()).limit(limit + 1)))
    events = tuple(Event.of(r) for r in rows[:limit])
    return Page(events, events[-1].seq if len(rows) > limit else None)
