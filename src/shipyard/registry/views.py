"""What other wings may know of registered models and their aliases, as frozen views.

Serving (what the default alias serves, whether a model exists before its labels are stored)
and the ``models alias`` rule read the registry through these functions, never through its
tables. Each takes the caller's session, so that a check and the write it guards are one
transaction (:func:`shipyard.serving.live.move_alias`).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select

from shipyard.errors import NotFound
from shipyard.store.registry import ModelAlias, RegisteredModel

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


@dataclass(frozen=True)
class ModelInfo:
    """A registered model (its versions are :class:`~shipyard.registry.VersionInfo`)."""

    name: str
    default_alias: str
    description: str
    created_at: float
    created_by: str

    @classmethod
    def of(cls, row: RegisteredModel) -> ModelInfo:
        return cls(row.name, row.default_alias, row.description, row.created_at, row.created_by)


@dataclass(frozen=True)
class AliasPointer:
    """Where one alias of a model points now."""

    model: str
    alias: str
    version: int


def model_in(s: Session, name: str) -> ModelInfo | None:
    """The model named ``name``, or None when there is none."""
    row = s.get(RegisteredModel, name)
    return ModelInfo.of(row) if row is not None else None


def models_in(s: Session) -> list[ModelInfo]:
    """Every registered model, by name."""
    rows = s.scalars(select(RegisteredModel).order_by(RegisteredModel.name))
    return [ModelInfo.of(row) for row in rows]


def require_model_in(s: Session, name: str) -> ModelInfo:
    """The model named ``name``; :class:`~shipyard.errors.NotFound` naming the closest names
    when there is none."""
    found = model_in(s, name)
    if found is None:
        known = s.scalars(select(RegisteredModel.name))
        raise NotFound("model", name, "see `shipyard models list`", candidates=known)
    return found


def default_aliases_in(
    s: Session, model: str | Collection[str] | None = None
) -> list[AliasPointer]:
    """Each model's default alias (``champion`` unless the model names another) where it is
    set, or only ``model``'s (or those of a collection of models); a model whose default alias
    points nowhere is left out."""
    q = (
        select(ModelAlias.model, ModelAlias.alias, ModelAlias.version)
        .join(RegisteredModel, RegisteredModel.name == ModelAlias.model)
        .where(ModelAlias.alias == RegisteredModel.default_alias)
    )
    if isinstance(model, str):
        q = q.where(ModelAlias.model == model)
    elif model is not None:
        q = q.where(ModelAlias.model.in_(list(model)))
    return [AliasPointer(name, alias, version) for name, alias, version in s.execute(q).all()]
