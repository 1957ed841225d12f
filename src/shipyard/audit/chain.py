"""Writing the audit chain: every decision that matters is an event whose hash covers the one
before it, so that an edit, a deletion or a reordering shows (:mod:`shipyard.audit.verify`).

An event is (seq, time, actor, mode, action, subject, details, prev_hash); its ``hash`` is the
SHA-256 of that tuple as RFC 8785 canonical JSON (:mod:`shipyard.audit.jcs`), and its
``prev_hash`` is the hash of event ``seq - 1`` (64 zeros for the first). ``mode`` says who
vouched for the actor: ``embedded`` (the CLI on the database; the actor is ``SHIPYARD_USER`` or
``--as``, which nothing checks) or ``server`` (the control plane's authenticated identity).

:func:`record` is the one way in. It is called inside the caller's transaction, so the event and
the change it records commit together or not at all; the event gets its place in the chain as
that transaction commits: the chain's head row (``audit_chain``) is locked (``SELECT … FOR
UPDATE`` on PostgreSQL; on SQLite every writing transaction already holds the database's write
lock from ``BEGIN IMMEDIATE``), the events are numbered after it, and the head moves on. Two
writers therefore never fork the chain, and the head's lock is the last lock a transaction takes,
so it cannot be part of a deadlock with the row locks taken before it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Literal

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from shipyard.audit.jcs import canonical, normalize
from shipyard.errors import Forbidden, InvalidInput, StoreError
from shipyard.store.tables import AuditChainHead, AuditEvent

Mode = Literal["embedded", "server"]
MODES: tuple[Mode, ...] = ("embedded", "server")
GENESIS = "0" * 64
"""The ``prev_hash`` of the first event."""
HEAD_ID = 1
"""The id of the chain head's only row."""

ACTION = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")
_PENDING = "shipyard.audit.pending"
_LISTENING = "shipyard.audit.listening"
_LIMITS = {"actor": 100, "action": 100, "subject kind": 50, "subject id": 200}
_ACTING: ContextVar[tuple[str, Mode] | None] = ContextVar("audit.acting", default=None)
_REQUEST: ContextVar[Mapping[str, str] | None] = ContextVar("audit.request", default=None)


@contextmanager
def acting(actor: str, mode: Mode, *, request: Mapping[str, str] | None = None) -> Iterator[None]:
    """Within this block, events are recorded in ``mode``; in ``server`` mode an event under
    any other actor than ``actor`` (the authenticated identity) is refused, so no service
    called by the control plane can record a decision under someone else's name.

    ``request``: the ids of the request being served (``request_id``, ``trace_id``), added to
    the details of every event recorded in the block, so that one command follows a request to
    the decisions it made (``shipyard trace``). They are details like any other: hashed with the
    event, in the same transaction. A key the event's own details name keeps the event's value.
    """
    token = _ACTING.set((actor, mode))
    request_token = _REQUEST.set(dict(request) if request else None)
    try:
        yield
    finally:
        _REQUEST.reset(request_token)
        _ACTING.reset(token)


def current_acting() -> tuple[str, Mode] | None:
    """(actor, mode) of the enclosing :func:`acting` block, if any."""
    return _ACTING.get()


def event_hash(
    *,
    seq: int,
    time: float,
    actor: str,
    mode: str,
    action: str,
    subject: tuple[str, str],
    details: Any,
    prev_hash: str,
) -> str:
    """The SHA-256 (hex) of an event's fields as canonical JSON."""
    body = {
        "seq": seq,
        "time": time,
        "actor": actor,
        "mode": mode,
        "action": action,
        "subject": {"kind": subject[0], "id": subject[1]},
        "details": details,
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical(body)).hexdigest()


def row_hash(row: AuditEvent, seq: int | None = None) -> str:
    """The hash ``row`` should carry as it reads now (at ``seq``, if given, instead of its own)."""
    return event_hash(
        seq=(row.seq or 0) if seq is None else seq,
        time=row.ts,
        actor=row.actor,
        mode=row.mode or "",
        action=row.action,
        subject=(row.subject_kind, row.subject_id),
        details=row.detail,
        prev_hash=row.prev_hash or "",
    )


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    subject: tuple[str, str],
    details: Mapping[str, Any] | None = None,
    now: float,
    mode: Mode | None = None,
) -> None:
    """Append an event to the audit chain when ``session``'s transaction commits.

    ``mode`` defaults to the enclosing :func:`acting` block's, else ``embedded``.

    ``subject`` is (kind, id), e.g. ``("rollout", "3f2a…")`` or ``("model_version", "digits/3")``;
    ``action`` a dotted lower-case name (``rollout.approve.start``); ``details`` anything JSON
    carries. A bad field raises :class:`~shipyard.errors.InvalidInput` here, before the caller's
    change commits without its event.
    """
    within = _ACTING.get()
    if mode is None:
        mode = within[1] if within is not None else "embedded"
    if mode not in MODES:
        raise InvalidInput(f"audit mode {mode!r}: use one of {list(MODES)}")
    if within is not None and within[1] == "server" and actor != within[0]:
        raise Forbidden(
            f"the control plane acts as {within[0]}; a decision recorded under {actor!r} is refused"
        )
    kind, subject_id = subject
    for name, value in (
        ("actor", actor),
        ("action", action),
        ("subject kind", kind),
        ("subject id", subject_id),
    ):
        if not isinstance(value, str):
            raise InvalidInput(f"audit {name} must be a string, not {type(value).__name__}")
        if len(value) > _LIMITS[name]:
            raise InvalidInput(f"audit {name} {value[:40]!r}… is longer than {_LIMITS[name]}")
    if not ACTION.match(action):
        raise InvalidInput(f"audit action {action!r}: dotted lower-case words (model.alias)")
    if not kind.strip():
        raise InvalidInput("an audit event needs a subject kind (model, rollout, pool…)")
    if mode == "server" and not actor.strip():
        raise InvalidInput("an event recorded by the server needs its authenticated actor")
    stored = normalize({**(_REQUEST.get() or {}), **dict(details or {})})
    canonical(stored)  # refuses what JSON cannot carry, now rather than at commit
    row = AuditEvent(
        ts=float(now),
        actor=actor,
        mode=mode,
        action=action,
        subject_kind=kind,
        subject_id=subject_id,
        detail=stored,
    )
    if not session.info.get(_LISTENING):
        event.listen(session, "before_commit", _append_pending)
        event.listen(session, "after_rollback", _drop_pending)
        session.info[_LISTENING] = True
    session.info.setdefault(_PENDING, []).append(row)


def _append_pending(session: Session) -> None:
    """Number the transaction's events after the chain's head, under the head's lock."""
    pending: list[AuditEvent] = session.info.pop(_PENDING, None) or []
    if not pending:
        return
    head = session.scalars(
        select(AuditChainHead)
        .where(AuditChainHead.id == HEAD_ID)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()
    if head is None:
        raise StoreError(
            "the audit chain's head row (table audit_chain) is missing, so no event can be "
            "appended; run `shipyard audit verify` and restore the database from a back-up"
        )
    for row in pending:
        row.seq = head.seq + 1
        row.prev_hash = head.hash
        row.hash = row_hash(row)
        session.add(row)
        head.seq, head.hash = row.seq, row.hash


def _drop_pending(session: Session) -> None:
    session.info.pop(_PENDING, None)
