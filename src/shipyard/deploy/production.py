"""Which version of a model was in production when: deploy's history of production spans.

Putting a version in production closes the open span, opens the new one and commands serving's
traffic split (:func:`shipyard.serving.split.set_split`) to send it all the traffic, in the
caller's transaction, so the split is never seen without the decision (and audit event) behind
it. The split itself is serving's (:mod:`shipyard.serving.split`); deploy reads it back through
that module and never through its table.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from shipyard.serving.split import set_split
from shipyard.store import Store
from shipyard.store.deploy import ProductionRecord


def production_version(s: Session, model: str) -> int | None:
    """The version in production now (the open span of the history), if any."""
    row = s.scalar(
        select(ProductionRecord)
        .where(ProductionRecord.model == model, ProductionRecord.until.is_(None))
        .order_by(ProductionRecord.since.desc(), ProductionRecord.id.desc())
    )
    return row.version if row else None


def production_span(s: Session, model: str) -> tuple[int, float] | None:
    """The production version and since when it has served, if any."""
    row = s.scalar(
        select(ProductionRecord)
        .where(ProductionRecord.model == model, ProductionRecord.until.is_(None))
        .order_by(ProductionRecord.since.desc(), ProductionRecord.id.desc())
    )
    return (row.version, row.since) if row else None


def put_in_production(
    s: Session,
    model: str,
    version: int,
    *,
    now: float,
    via: str,
    actor: str,
    reason: str,
    rollout_id: str | None = None,
) -> None:
    """All traffic to ``version``; close the previous production span and open this one."""
    for row in s.scalars(
        select(ProductionRecord).where(
            ProductionRecord.model == model, ProductionRecord.until.is_(None)
        )
    ):
        row.until = now
    s.add(
        ProductionRecord(
            model=model,
            version=version,
            since=now,
            until=None,
            via=via,
            rollout_id=rollout_id,
            actor=actor,
            reason=reason,
        )
    )
    set_split(s, model, stable=version, rollout_id=rollout_id, now=now)


def production_history(store: Store, model: str) -> list[ProductionRecord]:
    """Every production span of ``model``, oldest first."""
    with store.session(readonly=True) as s:
        return list(
            s.scalars(
                select(ProductionRecord)
                .where(ProductionRecord.model == model)
                .order_by(ProductionRecord.since, ProductionRecord.id)
            )
        )
