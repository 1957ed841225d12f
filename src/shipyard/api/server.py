"""Running the control plane: the app built from the environment, for Uvicorn's workers."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from sqlalchemy import select

if TYPE_CHECKING:
    from fastapi import FastAPI

    from shipyard.store import Store


def create_from_env() -> FastAPI:
    """The app over the workspace the environment names (each Uvicorn worker builds its own)."""
    from shipyard.api.app import create_app
    from shipyard.observability.logs import FORMAT_ENV, configure
    from shipyard.observability.otlp import otlp_handler
    from shipyard.workspace import Workspace

    if FORMAT_ENV in os.environ:  # set by `shipyard server` for its workers: log as it does
        configure(os.environ[FORMAT_ENV], os.environ.get(LEVEL_ENV, "warning"))
        otlp_handler()
    watch_supervisor()
    return create_app(Workspace.open(create=False))


SUPERVISOR_ENV = "SHIPYARD_SERVER_SUPERVISOR"
LEVEL_ENV = "SHIPYARD_SERVER_LOG_LEVEL"
"""Set by ``shipyard server --workers N`` (N > 1) to its own pid, for its workers."""


def watch_supervisor() -> bool:
    """In a worker of a multi-worker control plane: end with the supervisor (a killed
    ``shipyard server`` must not leave workers answering; :mod:`shipyard.supervision`).
    The control plane keeps no record of its own, so nothing is closed first. Returns whether
    a watch was started (not in the supervisor itself, nor with one worker)."""
    from shipyard.supervision import ParentWatch

    try:
        supervisor = int(os.environ.get(SUPERVISOR_ENV, ""))
    except ValueError:
        return False
    if supervisor == os.getpid():
        return False
    ParentWatch(supervisor, lambda: None).start()
    return True


def has_admin(store: Store) -> bool:
    from shipyard.store.identity import RoleBindingRecord

    with store.session(readonly=True) as s:
        found = s.scalars(
            select(RoleBindingRecord.id).where(
                RoleBindingRecord.role == "admin", RoleBindingRecord.scope == "*"
            )
        ).first()
    return found is not None
