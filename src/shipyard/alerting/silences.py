"""Silences: matchers that mute alerts between a start and an end, with who and why.

Unlike Alertmanager's in-memory silences (lost on ``kill -9`` between snapshots), a silence here
is a row, committed before the command that made it returns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shipyard import audit
from shipyard.alerting.matchers import Matcher, match_all
from shipyard.errors import InvalidInput, NotFound
from shipyard.store.alerting import SilenceRecord


@dataclass(frozen=True)
class Silence:
    id: str
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    created_by: str
    comment: str

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def mutes(self, labels: Mapping[str, Any], now: float) -> bool:
        return self.active(now) and match_all(self.matchers, labels)

    @classmethod
    def from_record(cls, record: SilenceRecord) -> Silence:
        return cls(
            record.id,
            tuple(Matcher.from_dict(m) for m in record.matchers),
            record.starts_at,
            record.ends_at,
            record.created_by,
            record.comment,
        )


def create_silence(
    session: Session,
    matchers: Sequence[Matcher],
    *,
    starts_at: float,
    ends_at: float,
    created_by: str,
    comment: str,
    now: float,
) -> Silence:
    """Record a silence (and an audit event); refuses one that would mute nothing or everything."""
    if not matchers:
        raise InvalidInput("a silence needs at least one matcher")
    if all(m.matches({}) for m in matchers):
        raise InvalidInput("these matchers match every alert (even one without labels)")
    if ends_at <= starts_at:
        raise InvalidInput("a silence must end after it starts")
    if ends_at <= now:
        raise InvalidInput("this silence would already be over")
    if not comment.strip():
        raise InvalidInput("say why: a silence needs a comment")
    record = SilenceRecord(
        matchers=[m.to_dict() for m in matchers],
        starts_at=starts_at,
        ends_at=ends_at,
        created_by=created_by,
        comment=comment,
        created_at=now,
    )
    session.add(record)
    session.flush()
    audit.record(
        session,
        actor=created_by,
        action="silence.create",
        subject=("silence", record.id),
        details={"matchers": record.matchers, "ends_at": ends_at, "comment": comment},
        now=now,
    )
    return Silence.from_record(record)


def expire_silence(session: Session, silence_id: str, *, actor: str, now: float) -> Silence:
    record = session.get(SilenceRecord, silence_id)
    if record is None:
        raise NotFound("silence", silence_id)
    record.ends_at = min(record.ends_at, now)
    record.starts_at = min(record.starts_at, record.ends_at)
    audit.record(
        session,
        actor=actor,
        action="silence.expire",
        subject=("silence", silence_id),
        details={},
        now=now,
    )
    return Silence.from_record(record)


def active_silences(session: Session, now: float) -> list[Silence]:
    rows = session.scalars(
        select(SilenceRecord).where(SilenceRecord.starts_at <= now, SilenceRecord.ends_at > now)
    )
    return [Silence.from_record(r) for r in rows]


def all_silences(session: Session) -> list[Silence]:
    rows = session.scalars(select(SilenceRecord).order_by(SilenceRecord.created_at))
    return [Silence.from_record(r) for r in rows]


def silenced(labels: Mapping[str, Any], silences: Iterable[Silence], now: float) -> bool:
    return any(s.mutes(labels, now) for s in silences)
