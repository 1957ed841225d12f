"""Fixtures shared by every test: a workspace in a temporary home, and the store on both backends.

``ws`` is the workspace most tests want: on the fake ``clock`` (a directory's ``conftest.py`` may
give ``clock`` another start), on SQLite and then on PostgreSQL.

PostgreSQL tests read the server's URL from ``SHIPYARD_TEST_POSTGRES_URL`` (``.ci/run`` sets it);
each test gets a schema of its own, dropped afterwards. Without the variable those tests are
skipped with a reason that says so.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from shipyard.clock import FakeClock
from shipyard.store import Store
from shipyard.workspace import Workspace

POSTGRES_URL = os.environ.get("SHIPYARD_TEST_POSTGRES_URL")
NO_POSTGRES = "SHIPYARD_TEST_POSTGRES_URL is not set: no PostgreSQL to test against"


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the developer's own Shipyard settings or home."""
    for name in list(os.environ):
        if name.startswith("SHIPYARD_") and name != "SHIPYARD_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("SHIPYARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SHIPYARD_USER", "tester")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # `shipyard login`'s file
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped after the test."""
    if not POSTGRES_URL:
        pytest.skip(NO_POSTGRES)
    schema = f"t_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty database: a SQLite file, then a PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    yield s
    s.dispose()


@pytest.fixture
def clock() -> FakeClock:
    """A clock that moves only when the test moves it."""
    return FakeClock()


@pytest.fixture
def ws(db_url: str, tmp_path: Path, clock: FakeClock) -> Iterator[Workspace]:
    """A workspace on the fake ``clock``: on SQLite, then on PostgreSQL."""
    workspace = Workspace.open(clock=clock, home=tmp_path / "home", db_url=db_url)
    yield workspace
    workspace.store.dispose()


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    """A workspace on SQLite in the test's temporary home."""
    return Workspace.open(home=tmp_path / "home")


@pytest.fixture
def pg_workspace(postgres_url: str, tmp_path: Path) -> Iterator[Workspace]:
    """A workspace whose metadata lives in PostgreSQL."""
    ws = Workspace.open(home=tmp_path / "home", db_url=postgres_url)
    yield ws
    ws.store.dispose()
