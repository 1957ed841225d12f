"""Running the control plane: the app built from the environment, for Uvicorn's workers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select

if TYPE_CHECKING:
    from fastapi import FastAPI

    from shipyard.store import Store


def create_from_env() -> FastAPI:
    """The app over the workspace the environment names (each Uvicorn worker builds its own)."""
    from shipyard.api.app import create_app
    from shipyard.workspace import Workspace

    return create_app(Workspace.open(create=False))


def has_admin(store: Store) -> bool:
    from shipyard.store.identity import RoleBindingRecord

    with store.session(readonly=True) as s:
        found = s.scalars(
            select(RoleBindingRecord.id).where(
                RoleBindingRecord.role == "admin", RoleBindingRecord.scope == "*"
            )
        ).first()
    return found is not None
