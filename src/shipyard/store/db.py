"""Opening the metadata database: engines, transactions and automatic migrations.

SQLite (the default) runs in WAL mode with a busy timeout; a write transaction that must not
interleave with another (admission, a state change) asks for ``immediate=True``, which on SQLite
takes the write lock at ``BEGIN`` (so two writers queue instead of deadlocking) and on PostgreSQL
is a plain transaction in which the caller takes row locks with ``SELECT … FOR UPDATE``.
"""

from __future__ import annotations

import fcntl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from shipyard.errors import StoreError

MIGRATIONS = Path(__file__).with_name("migrations")
SQLITE_BUSY_TIMEOUT_MS = 30_000


def _alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        # A file database keeps a pool of open connections: closing the last connection to a
        # WAL database checkpoints it, which made every short transaction pay for a checkpoint.
        pooling: dict[str, Any] = {} if ":memory:" in url else {"pool_size": 8, "max_overflow": 16}
        engine = create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            **pooling,
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, below
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            mode = conn.get_execution_options().get("sqlite_begin", "")
            conn.exec_driver_sql(f"BEGIN {mode}".strip())

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


class Store:
    """The metadata database.

    >>> store = Store("sqlite:///:memory:")   # doctest: +SKIP
    >>> with store.session() as s:             # a transaction: commit on success
    ...     s.add(thing)
    """

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = url
        self.dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
        try:
            self.engine = _make_engine(url)
        except (SQLAlchemyError, ValueError, ImportError) as exc:
            raise StoreError(f"cannot open the metadata database {self._safe_url}: {exc}") from None
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._immediate = sessionmaker(
            self.engine.execution_options(sqlite_begin="IMMEDIATE"), expire_on_commit=False
        )
        if migrate:
            try:
                self.migrate()
            except BaseException:
                self.engine.dispose()
                raise

    @property
    def _safe_url(self) -> str:
        if "@" in self.url:
            scheme, rest = self.url.split("://", 1)
            return f"{scheme}://***@{rest.split('@', 1)[1]}"
        return self.url

    @contextmanager
    def session(self, *, immediate: bool = False) -> Iterator[Session]:
        """A transaction: committed when the block ends, rolled back if it raises."""
        factory = self._immediate if immediate else self._sessions
        try:
            with factory() as session, session.begin():
                yield session
        except OperationalError as exc:
            raise StoreError(f"metadata database error ({self._safe_url}): {exc.orig}") from exc

    # -- migrations -------------------------------------------------------------------------
    def current_revisions(self) -> set[str]:
        with self.engine.connect() as conn:
            return set(MigrationContext.configure(conn).get_current_heads())

    def applied_revisions(self) -> set[str]:
        """Every migration applied to this database: its heads and all their ancestors."""
        script = ScriptDirectory.from_config(_alembic_config(self.url))
        heads = tuple(self.current_revisions())
        return {rev.revision for rev in script.iterate_revisions(heads, "base") if rev is not None}

    def migrate(self) -> None:
        """Bring the schema to the newest revision this Shipyard knows; refuse a newer one."""
        cfg = _alembic_config(self.url)
        script = ScriptDirectory.from_config(cfg)
        wanted = set(script.get_heads())
        known = {rev.revision for rev in script.walk_revisions()}
        try:
            current = self.current_revisions()
        except OperationalError as exc:
            raise StoreError(
                f"cannot reach the metadata database {self._safe_url}: {exc.orig}"
            ) from None
        if unknown := current - known:
            raise StoreError(
                f"the database {self._safe_url} has schema revision {sorted(unknown)}, "
                "made by a newer Shipyard; upgrade Shipyard to use it"
            )
        if current == wanted:
            return
        with self._migration_lock(), self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "heads")

    @contextmanager
    def _migration_lock(self) -> Iterator[None]:
        """One migrator at a time: a file lock beside SQLite, an advisory lock on PostgreSQL."""
        if self.dialect == "postgresql":
            with self.engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(7243001)"))
                try:
                    yield
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(7243001)"))
                    conn.commit()
            return
        path = self.engine.url.database
        if not path or path == ":memory:":
            with _MEMORY_LOCK:
                yield
            return
        with open(f"{path}.migrate-lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def dispose(self) -> None:
        self.engine.dispose()


_MEMORY_LOCK = threading.Lock()
