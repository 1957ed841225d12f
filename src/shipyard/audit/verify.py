"""Walking the audit chain: the first event that was edited, deleted, reordered or slipped in.

Each event is checked three ways, in ``seq`` order: its own hash (does it still read as it was
written, at this place?), its number (does it follow the one before?) and its link (is its
``prev_hash`` the hash of the event before?). Which of them fails says what happened:

- **edited**: the event no longer hashes to its ``hash``; or its ``hash`` was recomputed after
  the edit, and then the next event's link points at a hash no event has any more.
- **deleted**: a number is missing (at the start, in the middle, or at the end, where the chain's
  head row still holds the last number); or an event's link points at an event that is gone and
  the events after it were renumbered.
- **reordered**: an event hashes correctly at another number, the one after the event its link
  points at, which is elsewhere in the table.
- **inserted**: a row without a place in the chain (no ``seq``), written around
  :func:`shipyard.audit.record`.

What the chain cannot show on its own: someone who can write the table, disable its triggers and
recompute every hash from some event to the end (and the head row) leaves a chain that verifies.
Keep the head that ``shipyard audit verify`` prints somewhere else and give it back as an anchor
(``--anchor SEQ:HASH``); an anchored event that changed is then named too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shipyard.audit.chain import GENESIS, HEAD_ID, row_hash
from shipyard.errors import ShipyardError
from shipyard.store import Store
from shipyard.store.tables import AuditChainHead, AuditEvent

Kind = Literal["edited", "deleted", "reordered", "inserted"]
BATCH = 2000
"""Events read per round trip while walking."""
MAX_HOPS = 64
"""How far back the links of displaced events are followed to find where an event belongs."""


@dataclass(frozen=True)
class Tampering:
    """The first break in the chain: what kind, the event (by ``seq``; None when it has none)."""

    kind: Kind
    seq: int | None
    message: str


@dataclass(frozen=True)
class Verdict:
    events: int
    """How many events were checked."""
    head_seq: int
    head_hash: str
    tampering: Tampering | None

    @property
    def ok(self) -> bool:
        return self.tampering is None

    def to_dict(self) -> dict[str, Any]:
        t = self.tampering
        return {
            "ok": self.ok,
            "events": self.events,
            "head": {"seq": self.head_seq, "hash": self.head_hash},
            "tampering": None if t is None else {"kind": t.kind, "seq": t.seq, "why": t.message},
        }


def verify(store: Store, *, anchor: tuple[int, str] | None = None) -> Verdict:
    """Walk the whole chain and say whether it is intact, or where and how it was tampered with.

    ``anchor``: a (seq, hash) kept from an earlier verification, which must still be in the chain.
    """
    with store.session(readonly=True) as s:
        return _verify(s, anchor)


def _verify(s: Session, anchor: tuple[int, str] | None) -> Verdict:
    head = s.get(AuditChainHead, HEAD_ID)
    # events appended while this walks (PostgreSQL reads each query afresh) are past the head
    # read here, so they are left for the next walk
    last = head.seq if head is not None else s.scalar(select(func.max(AuditEvent.seq))) or 0
    checked, prev_seq, prev_hash = 0, 0, GENESIS
    found: Tampering | None = None
    while found is None:
        batch = list(
            s.scalars(
                select(AuditEvent)
                .where(AuditEvent.seq > prev_seq, AuditEvent.seq <= last)
                .order_by(AuditEvent.seq)
                .limit(BATCH)
            )
        )
        for row in batch:
            found = _check(s, row, prev_seq, prev_hash)
            if found is not None:
                break
            checked += 1
            prev_seq, prev_hash = row.seq or 0, row.hash or ""
        if len(batch) < BATCH:
            break
    if found is None:
        found = _check_end(s, head, prev_seq, prev_hash)
    if found is None and anchor is not None:
        found = _check_anchor(s, anchor)
    if found is None:
        found = _check_unchained(s)
    return Verdict(
        checked,
        head.seq if head is not None else prev_seq,
        head.hash if head is not None else prev_hash,
        found,
    )


def _check(s: Session, row: AuditEvent, prev_seq: int, prev_hash: str) -> Tampering | None:
    seq = row.seq or 0
    described = f"event {seq} ({row.action} by {row.actor or '?'} on {row.subject_id})"
    if _hash_or_none(row) != row.hash:
        origin = _original_seq(s, row, MAX_HOPS)
        if origin is not None and origin != seq:
            return Tampering(
                "reordered",
                seq,
                f"reordered: {described} was written as event {origin}; events were moved",
            )
        if origin is None and row.prev_hash != GENESIS and not _has_hash(s, row.prev_hash):
            return Tampering(
                "deleted",
                seq,
                f"deleted: {described} was chained after an event that is gone (deleted, and "
                "the events after it renumbered)",
            )
        return Tampering(
            "edited", seq, f"edited: {described} no longer matches its hash; it was changed"
        )
    if seq != prev_seq + 1:
        missing = _span(prev_seq + 1, seq - 1)
        return Tampering(
            "deleted", prev_seq + 1, f"deleted: {missing} missing; the chain resumes at {seq}"
        )
    if row.prev_hash != prev_hash:
        holder = s.scalar(select(AuditEvent.seq).where(AuditEvent.hash == row.prev_hash))
        if holder is not None:
            return Tampering(
                "reordered",
                seq,
                f"reordered: {described} was written after event {holder}, not after "
                f"event {prev_seq}",
            )
        if prev_seq == 0:
            return Tampering(
                "deleted",
                seq,
                f"deleted: {described} is first but was chained after another event; the "
                "events before it were deleted and the rest renumbered and rehashed",
            )
        return Tampering(
            "edited",
            prev_seq,
            f"edited: event {prev_seq} was changed and its hash recomputed; event {seq} is "
            "still chained to what it was",
        )
    return None


def _check_end(
    s: Session, head: AuditChainHead | None, last_seq: int, last_hash: str
) -> Tampering | None:
    if head is None:
        return Tampering(
            "deleted",
            None,
            "deleted: the chain's head row (table audit_chain) is gone; events deleted from the "
            "end could not be told apart from none",
        )
    if head.seq > last_seq:
        return Tampering(
            "deleted",
            last_seq + 1,
            f"deleted: {_span(last_seq + 1, head.seq)} missing at the end; the chain's head "
            f"says it reaches {head.seq}",
        )
    if head.hash != last_hash:
        return Tampering(
            "edited",
            last_seq,
            f"edited: event {last_seq}, the last, was changed and its hash recomputed; the "
            "chain's head still holds the hash it was written with",
        )
    return None


def _check_anchor(s: Session, anchor: tuple[int, str]) -> Tampering | None:
    seq, expected = anchor
    row = s.scalar(select(AuditEvent).where(AuditEvent.seq == seq))
    if row is None:
        return Tampering("deleted", seq, f"deleted: the anchored event {seq} is not in the chain")
    if row.hash != expected:
        return Tampering(
            "edited",
            seq,
            f"edited: the anchored event {seq} has hash {row.hash}, not {expected}: the chain "
            "was rewritten from it (or before it) on",
        )
    return None


def _check_unchained(s: Session) -> Tampering | None:
    stray = s.scalar(select(AuditEvent).where(AuditEvent.seq.is_(None)).order_by(AuditEvent.id))
    if stray is None:
        return None
    return Tampering(
        "inserted",
        None,
        f"inserted: audit row {stray.id} ({stray.action} by {stray.actor or '?'}) has no place in "
        "the chain; it was written around audit.record",
    )


def _original_seq(s: Session, row: AuditEvent, hops: int) -> int | None:
    """The number ``row`` was written with: one past the event its link points at (found by
    following links back, up to ``hops``), if it hashes correctly there."""
    before: int | None = 0
    if row.prev_hash != GENESIS:
        linked = s.scalar(select(AuditEvent).where(AuditEvent.hash == row.prev_hash))
        if linked is None or hops <= 0:
            return None
        intact = _hash_or_none(linked) == linked.hash
        before = linked.seq if intact else _original_seq(s, linked, hops - 1)
    if before is None:
        return None
    candidate = before + 1
    return candidate if _hash_or_none(row, candidate) == row.hash else None


def _has_hash(s: Session, digest: str | None) -> bool:
    return s.scalar(select(AuditEvent.id).where(AuditEvent.hash == digest)) is not None


def _hash_or_none(row: AuditEvent, seq: int | None = None) -> str | None:
    """The row's hash as it reads now; None for details that JSON cannot carry (an edit)."""
    try:
        return row_hash(row, seq)
    except ShipyardError:
        return None


def _span(first: int, last: int) -> str:
    return f"event {first} is" if first == last else f"events {first}–{last} are"
