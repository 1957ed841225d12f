"""Fixtures shared by every test: a workspace in a temporary home, and the store on both backends.

``ws`` is the workspace most tests want: on the fake ``clock`` (a directory's ``conftest.py`` may
give ``clock`` another start), on SQLite and then on PostgreSQL.

PostgreSQL tests read the server's URL from ``SHIPYARD_TEST_POSTGRES_URL`` (``.ci/run`` sets it);
each test gets a schema of its own, dropped afterwards. Without the variable those tests are
skipped with a reason that says so.

Migrating an empty database to the newest schema costs ~0.2 s on SQLite and ~0.7 s on
PostgreSQL, and most tests only want one that is migrated already (``store``, ``ws``,
``workspace``, ``migrated_db_url``): for them the migrations run once per session. On SQLite
each test gets a copy of a migrated file; on PostgreSQL the migration's statements, recorded once,
are replayed into the test's schema in one transaction. ``db_url`` and ``postgres_url`` stay
empty, for the tests of migrating itself.
"""

from __future__ import annotations

import io
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, create_engine, event, text

from shipyard.clock import FakeClock
from shipyard.store import Store
from shipyard.workspace import Workspace

POSTGRES_URL = os.environ.get("SHIPYARD_TEST_POSTGRES_URL")
NO_POSTGRES = "SHIPYARD_TEST_POSTGRES_URL is not set: no PostgreSQL to test against"


def isolate(monkeypatch: pytest.MonkeyPatch, here: Path) -> None:
    """No test reads the developer's own Shipyard settings or home: ``here`` is the working
    folder, and ``here / "home"`` the home."""
    for name in list(os.environ):
        if name.startswith("SHIPYARD_") and name != "SHIPYARD_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("SHIPYARD_HOME", str(here / "home"))
    monkeypatch.setenv("SHIPYARD_USER", "tester")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(here / "config"))  # `shipyard login`'s file
    monkeypatch.chdir(here)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate(monkeypatch, tmp_path)


@pytest.fixture(autouse=True)
def _root_logger_restored() -> Iterator[None]:
    """A command run in this process (`shipyard daemon --once`, `serve`) installs the JSON log
    handler on the root logger, as its own process would; it goes with the test, or every
    later test logs through a handler bound to a closed capture stream, or into a CLI's output."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def json_log() -> io.StringIO:
    """This process's log as `shipyard serve`/`server`/`daemon --log-format json --log-level
    info` write it (servers started by a test run in its process); the root logger is restored
    after the test by :func:`_root_logger_restored`."""
    import logging

    from shipyard.observability.logs import configure

    out = io.StringIO()
    configure("json", logging.INFO, out)
    return out


@pytest.fixture(scope="module")
def module_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder for a module-scoped fixture, isolated as each test is (see ``isolate``):
    such a fixture is set up before the test's own isolation."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        here = tmp_path_factory.mktemp("module")
        isolate(monkeypatch, here)
        yield here


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty database: a SQLite file, then a PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to the newest schema, once per session: copy it, never open it."""
    path = tmp_path_factory.mktemp("template") / "migrated.db"
    Store(f"sqlite:///{path}").dispose()
    # closing the last connection checkpoints the WAL into the file and removes it
    assert not path.with_name(f"{path.name}-wal").exists(), "the template's WAL was left behind"
    return path


@pytest.fixture
def migrated_sqlite(sqlite_template: Path) -> Callable[[Path], str]:
    """Lays a SQLite database at the newest schema at a path (a copy of the template) and
    returns its URL. At ``home / "shipyard.db"`` it makes ``home`` a workspace, as
    ``shipyard init`` would."""

    def copy(path: Path) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sqlite_template, path)
        return f"sqlite:///{path}"

    return copy


@contextmanager
def _postgres_schema(
    admin: Engine, setup: Callable[[Connection], None] = lambda _: None
) -> Iterator[str]:
    """A fresh schema (``setup`` run in it in the transaction that creates it) and the URL whose
    search_path is that schema; dropped afterwards.

    Its connections commit without waiting for the WAL to reach the disk
    (``synchronous_commit=off``): a commit is as visible to every other connection, only not
    durable across a crash of the server, which no test causes; ~1 ms a commit instead of ~4."""
    assert POSTGRES_URL
    schema = f"t_{uuid.uuid4().hex[:10]}"
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        conn.execute(text(f'SET LOCAL search_path TO "{schema}"'))
        setup(conn)
    sep = "&" if "?" in POSTGRES_URL else "?"
    options = f"-csearch_path%3D{schema}%20-csynchronous_commit%3Doff"
    try:
        yield f"{POSTGRES_URL}{sep}options={options}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture(scope="session")
def _postgres_admin() -> Iterator[Engine]:
    if not POSTGRES_URL:
        pytest.skip(NO_POSTGRES)
    admin = create_engine(POSTGRES_URL)
    yield admin
    admin.dispose()


@pytest.fixture
def postgres_url(_postgres_admin: Engine) -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh, empty schema, dropped after the test."""
    with _postgres_schema(_postgres_admin) as url:
        yield url


_WRITES = {"CREATE", "ALTER", "DROP", "COMMENT", "INSERT", "UPDATE", "DELETE", "DO", "GRANT", "SET"}


@pytest.fixture(scope="session")
def postgres_migration(_postgres_admin: Engine) -> Callable[[Connection], None]:
    """Migrating an empty schema to the newest revision, as a function of a connection.

    Recorded once per session from a real migration (Alembic, through :meth:`Store.migrate`):
    every statement that writes, with its parameters, in order. The reads are left out: on an
    empty schema they find nothing, the same each time. Replaying the record in one transaction
    takes ~0.3 s less than Alembic does; the replayed schema is checked against the migrated
    one (tables, columns, constraints, indexes, triggers, functions, rows) before any test
    uses it.
    """
    recorded: list[tuple[str, Any, bool]] = []

    def record(
        _conn: Any, _cursor: Any, statement: str, params: Any, _ctx: Any, many: bool
    ) -> None:
        verb = statement.split(None, 1)[0].upper()
        assert verb in _WRITES | {"SELECT"}, f"a migration ran {verb}: is it a read or a write?"
        if verb != "SELECT":
            recorded.append((statement, params, many))

    def replay(conn: Connection) -> None:
        with conn.connection.dbapi_connection.cursor() as cursor:
            for statement, params, many in recorded:
                (cursor.executemany if many else cursor.execute)(statement, params)

    with _postgres_schema(_postgres_admin) as migrated:
        store = Store(migrated, migrate=False)
        event.listen(store.engine, "before_cursor_execute", record)
        store.migrate()
        store.dispose()
        with _postgres_schema(_postgres_admin, replay) as replayed:
            want, got = _shape(migrated), _shape(replayed)
            differ = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
            assert not differ, (
                f"replaying the recorded migration gives other {differ} than migrating: does a "
                "migration depend on when it runs (now(), a random id)? tests/conftest.py"
            )
    return replay


def _shape(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """What a schema holds, named without the schema: enough to tell two schemas apart."""
    queries = {
        "columns": "SELECT table_name, column_name, ordinal_position, data_type, is_nullable, "
        "column_default FROM information_schema.columns WHERE table_schema = current_schema()",
        "constraints": "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(c.oid) "
        "FROM pg_constraint c WHERE connamespace = current_schema()::regnamespace",
        "indexes": "SELECT tablename, indexname, replace(indexdef, current_schema() || '.', '') "
        "FROM pg_indexes WHERE schemaname = current_schema()",
        "triggers": "SELECT event_object_table, trigger_name, event_manipulation, action_timing, "
        "action_statement FROM information_schema.triggers "
        "WHERE trigger_schema = current_schema()",
        "functions": "SELECT proname, prosrc FROM pg_proc "
        "WHERE pronamespace = current_schema()::regnamespace",
        "sequences": "SELECT sequence_name, start_value FROM information_schema.sequences "
        "WHERE sequence_schema = current_schema()",
    }
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            shape = {k: sorted(map(tuple, conn.execute(text(q)))) for k, q in queries.items()}
            for table in {t for t, *_ in shape["columns"]}:
                rows = conn.execute(text(f'SELECT * FROM "{table}"'))
                shape[f"rows of {table}"] = sorted(map(repr, rows))
    finally:
        engine.dispose()
    return shape


@pytest.fixture
def migrated_postgres_url(
    _postgres_admin: Engine, postgres_migration: Callable[[Connection], None]
) -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema at the newest revision (the
    recorded migration replayed), dropped after the test."""
    with _postgres_schema(_postgres_admin, postgres_migration) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def migrated_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a database at the newest schema: a SQLite file, then a PostgreSQL schema."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("migrated_sqlite")(tmp_path / "store.db"))
    return str(request.getfixturevalue("migrated_postgres_url"))


@pytest.fixture
def store(migrated_db_url: str) -> Iterator[Store]:
    s = Store(migrated_db_url)
    yield s
    s.dispose()


@pytest.fixture
def clock() -> FakeClock:
    """A clock that moves only when the test moves it."""
    return FakeClock()


@pytest.fixture
def ws(migrated_db_url: str, tmp_path: Path, clock: FakeClock) -> Iterator[Workspace]:
    """A workspace on the fake ``clock``: on SQLite, then on PostgreSQL."""
    workspace = Workspace.open(clock=clock, home=tmp_path / "home", db_url=migrated_db_url)
    yield workspace
    workspace.store.dispose()


@pytest.fixture
def workspace(tmp_path: Path, migrated_sqlite: Callable[[Path], str]) -> Workspace:
    """A workspace on SQLite in the test's temporary home."""
    migrated_sqlite(tmp_path / "home" / "shipyard.db")
    return Workspace.open(home=tmp_path / "home")


@pytest.fixture
def pg_workspace(migrated_postgres_url: str, tmp_path: Path) -> Iterator[Workspace]:
    """A workspace whose metadata lives in PostgreSQL."""
    ws = Workspace.open(home=tmp_path / "home", db_url=migrated_postgres_url)
    yield ws
    ws.store.dispose()
