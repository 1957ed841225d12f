"""A live control plane for tests: ``shipyard server``'s app on a real socket, over a workspace
on SQLite or PostgreSQL, with a cast of identities and their tokens.

The cast (roles over ``*`` unless said): ``admin`` (admin), ``alice`` (approver), ``bob``
(deployer; the author in the four-eyes tests), ``olga`` (operator), ``vic`` (viewer), ``quinn``
(quota-admin), ``nobody`` (no roles). ``Plane.token[name]`` is each one's token.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvicorn
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from server_testkit import free_port, start_server, stop_server
from shipyard.api.app import create_app
from shipyard.clock import FakeClock
from shipyard.identity.accounts import bind_role
from shipyard.identity.authn import Authenticator
from shipyard.identity.tokens import create_token
from shipyard.workspace import Workspace

POSTGRES_URL = os.environ.get("SHIPYARD_TEST_POSTGRES_URL")
CAST: dict[str, tuple[str, ...]] = {
    "admin": ("admin",),
    "alice": ("approver",),
    "bob": ("deployer",),
    "olga": ("operator",),
    "vic": ("viewer",),
    "quinn": ("quota-admin",),
    "nobody": (),
}


@contextmanager
def pg_schema() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    assert POSTGRES_URL
    schema = f"t_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_URL, poolclass=NullPool)  # no connection idles for the module
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@dataclass
class Plane:
    url: str
    ws: Workspace
    clock: FakeClock
    server: uvicorn.Server
    token: dict[str, str] = field(default_factory=dict)

    @property
    def api(self) -> str:
        return self.url + "/api/v1"

    def http(self, who: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token[who]}"} if who else {}
        return httpx.Client(base_url=self.api, headers=headers, timeout=30)

    def env(self, who: str) -> dict[str, str]:
        """The environment of a CLI acting as ``who`` through this server."""
        return {"SHIPYARD_URL": self.url, "SHIPYARD_TOKEN": self.token[who]}


@contextmanager
def live_plane(
    db_url: str, home: Path, remember_s: float = 0.0, **settings: object
) -> Iterator[Plane]:
    """A control plane over a fresh workspace at ``db_url``, with the cast's tokens.

    The server remembers no token (``remember_s`` 0) unless told: the tests change roles and
    tokens in the store between requests, and the fake clock would never let one be forgotten."""
    clock = FakeClock()
    ws = Workspace.open(clock=clock, home=home, db_url=db_url, **settings)
    now = clock.time()
    tokens = {}
    for name, roles in CAST.items():
        for role in roles:
            bind_role(ws.store, name, role, "*", actor="setup", now=now, mode="embedded")
        tokens[name] = create_token(ws.store, name, actor="setup", now=now, mode="embedded").secret
    port = free_port()
    server_settings = ws.settings.server.model_copy(update={"remember_s": remember_s})
    app = create_app(ws, Authenticator(ws.store, server_settings, clock))
    server, thread = start_server(app, port, lifespan="off")
    try:
        yield Plane(f"http://127.0.0.1:{port}", ws, clock, server, tokens)
    finally:
        stop_server(server, thread)
        ws.store.dispose()


@contextmanager
def plane_on(
    backend: str, home: Path, remember_s: float = 0.0, **settings: object
) -> Iterator[Plane]:
    """:func:`live_plane` on ``sqlite`` or ``postgresql`` (a schema of its own)."""
    if backend == "sqlite":
        url = f"sqlite:///{home / 'store.db'}"
        with live_plane(url, home, remember_s, **settings) as plane:
            yield plane
        return
    with pg_schema() as url, live_plane(url, home, remember_s, **settings) as plane:
        yield plane
