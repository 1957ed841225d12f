"""``/audit``: the tamper-evident audit, read and verified."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from shipyard.api.operations import Context, Params, operation, page
from shipyard.identity import READ

SEQ_MAX = 2**31 - 1
"""The largest ``seq`` a query may name: the column is an SQL INTEGER, 32 bits on PostgreSQL,
which answers a larger bound with an error rather than an empty result."""


class AuditQuery(Params):
    action: str | None = Field(
        None, max_length=100, description="Only this action (model.alias), or a family (rollout.*)."
    )
    actor: str | None = Field(None, max_length=100, description="Only what this actor did.")
    subject_kind: str | None = Field(
        None, max_length=50, description="Only events about this kind."
    )
    subject_id: str | None = Field(None, max_length=200, description="Only events about this id.")
    since: float | None = Field(None, ge=0, le=1e11, description="Only since then (epoch seconds).")
    before: int | None = Field(None, ge=1, le=SEQ_MAX, description="Page: events before this seq.")
    limit: int = Field(50, ge=1, le=1000, description="How many, newest first.")


class VerifyQuery(Params):
    anchor_seq: int | None = Field(None, ge=1, le=SEQ_MAX, description="A seq kept from before…")
    anchor_hash: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$", description="…and its hash: both must still hold."
    )


@operation("GET", "/audit/events", name="audit.list")
def list_audit(ctx: Context, *, query: AuditQuery) -> dict[str, Any]:
    """The audit events, newest first.

    Who did what to which thing, when, and in which mode (`server`: an authenticated identity;
    `embedded`: the CLI on the database, whose name nothing checked). Paged by `before`."""
    from shipyard.audit import list_events

    ctx.require(READ)
    found = list_events(
        ctx.ws.store,
        action=query.action,
        actor=query.actor,
        subject_kind=query.subject_kind,
        subject_id=query.subject_id,
        since=query.since,
        before=query.before,
        limit=query.limit,
    )
    next_cursor = str(found.next_before) if found.next_before is not None else None
    return page([e.to_dict() for e in found.events], next_cursor, next_before=found.next_before)


@operation("GET", "/audit/verify", name="audit.verify")
def verify_audit(ctx: Context, *, query: VerifyQuery) -> dict[str, Any]:
    """Walk the audit chain and name the first edited, deleted, reordered or inserted event."""
    from shipyard.audit import verify
    from shipyard.errors import InvalidInput

    ctx.require(READ)
    if (query.anchor_seq is None) != (query.anchor_hash is None):
        raise InvalidInput("query.anchor_seq and query.anchor_hash go together")
    anchor = (
        (query.anchor_seq, query.anchor_hash)
        if query.anchor_seq is not None and query.anchor_hash is not None
        else None
    )
    return verify(ctx.ws.store, anchor=anchor).to_dict()
