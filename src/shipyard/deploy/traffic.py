"""The live traffic split: which versions of a model serve, with which share, and the history
of which version was in production when.

The model server reads :func:`live_splits` every ``serving.refresh_interval_s`` (0.5 s by
default) and routes with :func:`shipyard.serving.routing.choose_version`; deploy writes the
split inside the same transaction as the rollout state that calls for it, so a split is never
seen without the decision (and audit event) behind it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from shipyard.store import Store
from shipyard.store.deploy import ProductionRecord, TrafficSplit


@dataclass(frozen=True)
class LiveSplit:
    """One model's live versions: the stable one and, during a canary, the canary and its weight."""

    model: str
    stable: int | None
    canary: int | None = None
    canary_weight_pct: float = 0.0
    rollout_id: str | None = None
    updated_at: float = 0.0
    weights: dict[int, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "model": self.model,
            "stable": self.stable,
            "canary": self.canary,
            "canary_weight_pct": self.canary_weight_pct,
            "rollout_id": self.rollout_id,
            "updated_at": self.updated_at,
            "weights": {str(v): w for v, w in self.weights.items()},
        }


def _split_of(model: str, rows: list[TrafficSplit]) -> LiveSplit:
    stable = next((r for r in rows if r.role == "stable"), None)
    canary = next((r for r in rows if r.role == "canary"), None)
    return LiveSplit(
        model=model,
        stable=stable.version if stable else None,
        canary=canary.version if canary else None,
        canary_weight_pct=canary.weight_pct if canary else 0.0,
        rollout_id=next((r.rollout_id for r in (canary, stable) if r is not None), None),
        updated_at=max((r.updated_at for r in rows), default=0.0),
        weights={r.version: r.weight_pct for r in rows if r.weight_pct > 0},
    )


def live_split(store: Store, model: str) -> LiveSplit | None:
    """The model's split, or None when deploy has never put a version of it live."""
    with store.session(readonly=True) as s:
        rows = list(s.scalars(select(TrafficSplit).where(TrafficSplit.model == model)))
    return _split_of(model, rows) if rows else None


def live_splits(store: Store) -> dict[str, LiveSplit]:
    """Every model's split, in one read (what a model server refreshes)."""
    with store.session(readonly=True) as s:
        return live_splits_in(s)


def live_splits_in(s: Session) -> dict[str, LiveSplit]:
    """:func:`live_splits` inside the caller's session (the model server's refresh)."""
    rows = list(s.scalars(select(TrafficSplit)))
    by_model: dict[str, list[TrafficSplit]] = {}
    for r in rows:
        by_model.setdefault(r.model, []).append(r)
    return {m: _split_of(m, rs) for m, rs in by_model.items()}


def write_split(
    s: Session,
    model: str,
    *,
    stable: int | None,
    canary: int | None,
    canary_weight_pct: float,
    rollout_id: str | None,
    now: float,
) -> None:
    """Replace the model's split inside the caller's transaction."""
    s.execute(delete(TrafficSplit).where(TrafficSplit.model == model))
    s.flush()
    if canary is not None and canary == stable:
        raise ValueError("canary and stable must differ")
    if stable is not None:
        s.add(
            TrafficSplit(
                model=model,
                version=stable,
                weight_pct=100.0 - (canary_weight_pct if canary is not None else 0.0),
                role="stable",
                rollout_id=rollout_id,
                updated_at=now,
            )
        )
    if canary is not None:
        s.add(
            TrafficSplit(
                model=model,
                version=canary,
                weight_pct=canary_weight_pct if stable is not None else 100.0,
                role="canary",
                rollout_id=rollout_id,
                updated_at=now,
            )
        )
    s.flush()


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
    write_split(
        s, model, stable=version, canary=None, canary_weight_pct=0.0, rollout_id=rollout_id, now=now
    )


def production_history(store: Store, model: str) -> list[ProductionRecord]:
    with store.session(readonly=True) as s:
        return list(
            s.scalars(
                select(ProductionRecord)
                .where(ProductionRecord.model == model)
                .order_by(ProductionRecord.since, ProductionRecord.id)
            )
        )
