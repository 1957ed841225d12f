"""The registry read a page at a time: models by name, versions newest first, alias moves
newest first, each from a keyset (the last key of the page before), so that a page costs the
same whether it is the first or the hundredth and a write between two pages skips nothing.

Each function takes the caller's session, like :mod:`shipyard.registry.views`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from shipyard.registry.models import AliasMove, VersionInfo
from shipyard.registry.views import ModelInfo
from shipyard.store.registry import AliasEvent, ModelAlias, ModelVersion, RegisteredModel

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


@dataclass(frozen=True)
class ModelSummary:
    """A model as a listing shows it: its latest version and where its aliases point."""

    model: ModelInfo
    latest_version: int | None
    aliases: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.model.name,
            "latest_version": self.latest_version,
            "aliases": self.aliases,
            "default_alias": self.model.default_alias,
            "created_at": self.model.created_at,
        }


def model_page(s: Session, after: str | None, limit: int) -> tuple[list[ModelSummary], bool]:
    """Up to ``limit`` models named after ``after``, by name, and whether more follow."""
    rm = RegisteredModel  # columns, not ORM objects: a page is read, never changed
    q = (
        select(rm.name, rm.default_alias, rm.description, rm.created_at, rm.created_by)
        .order_by(rm.name)
        .limit(limit + 1)
    )
    if after is not None:
        q = q.where(rm.name > after)
    rows = s.execute(q).all()
    more = len(rows) > limit
    models = [ModelInfo(*r) for r in rows[:limit]]
    names = [m.name for m in models]
    latest = dict(
        s.execute(
            select(ModelVersion.model, func.max(ModelVersion.version))
            .where(ModelVersion.model.in_(names))
            .group_by(ModelVersion.model)
        ).all()
    )
    aliases: dict[str, dict[str, int]] = {n: {} for n in names}
    for model, alias, version in s.execute(
        select(ModelAlias.model, ModelAlias.alias, ModelAlias.version).where(
            ModelAlias.model.in_(names)
        )
    ):
        aliases[model][alias] = version
    summaries = [ModelSummary(m, latest.get(m.name), aliases[m.name]) for m in models]
    return summaries, more


def latest_version_in(s: Session, name: str) -> int | None:
    """The highest version number of ``name`` (None: it has none)."""
    latest: int | None = s.scalar(
        select(func.max(ModelVersion.version)).where(ModelVersion.model == name)
    )
    return latest


def aliases_in(s: Session, name: str) -> dict[str, int]:
    """Where each alias of ``name`` points now."""
    return {
        a.alias: a.version for a in s.scalars(select(ModelAlias).where(ModelAlias.model == name))
    }


def version_page(
    s: Session, name: str, before: int | None, limit: int
) -> tuple[list[VersionInfo], bool]:
    """Up to ``limit`` versions of ``name`` numbered below ``before``, newest first, and whether
    more follow."""
    q = (
        select(ModelVersion)
        .where(ModelVersion.model == name)
        .order_by(ModelVersion.version.desc())
        .limit(limit + 1)
    )
    if before is not None:
        q = q.where(ModelVersion.version < before)
    rows = s.scalars(q).all()
    return [VersionInfo.of(r) for r in rows[:limit]], len(rows) > limit


def version_in(s: Session, name: str, version: int) -> VersionInfo | None:
    row = s.scalar(
        select(ModelVersion).where(ModelVersion.model == name, ModelVersion.version == version)
    )
    return VersionInfo.of(row) if row is not None else None


def alias_moves_page(
    s: Session, name: str, alias: str | None, before: int | None, limit: int
) -> tuple[list[tuple[int, AliasMove]], bool]:
    """Up to ``limit`` moves of ``name``'s aliases (or of ``alias`` only) recorded before the
    move ``before``, newest first, each with its id (the next page's key), and whether more
    follow."""
    q = (
        select(AliasEvent)
        .where(AliasEvent.model == name)
        .order_by(AliasEvent.id.desc())
        .limit(limit + 1)
    )
    if alias is not None:
        q = q.where(AliasEvent.alias == alias)
    if before is not None:
        q = q.where(AliasEvent.id < before)
    rows = s.scalars(q).all()
    moves = [
        (e.id, AliasMove(e.model, e.alias, e.from_version, e.to_version, e.actor, e.reason, e.ts))
        for e in rows[:limit]
    ]
    return moves, len(rows) > limit
