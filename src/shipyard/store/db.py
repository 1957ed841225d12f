"""Opening the metadata database: engines, transactions and automatic migrations.

SQLite (the default) runs in WAL mode. The rule for transactions:

- Every :meth:`Store.session` may write, so on SQLite it takes the write lock at its start
  (``BEGIN IMMEDIATE``). A deferred transaction that reads and then writes cannot upgrade its
  lock once another connection has committed since its read (``SQLITE_BUSY_SNAPSHOT``), and
  SQLite answers that at once with "database is locked", busy timeout or not; taking the lock
  first makes writers queue instead.
- A caller that only reads says ``readonly=True``: a deferred ``BEGIN`` that never waits for
  writers (WAL readers see a snapshot), with ``PRAGMA query_only`` on, so a write slipped into
  it fails loudly instead of racing.
- A session opened inside another writing session of the same store in the same thread (a
  lookup made while a transaction is open) is read only: it could never get the lock its own
  thread holds, so asking for it would wait out the whole bound.
- Waiting for the lock is bounded: SQLite's busy handler waits up to ``busy_timeout_s`` (30 s by
  default) with its own backoff, and a busy answer that comes back without waiting is retried
  here with exponential backoff until the same deadline. Past it, :class:`StoreBusy` (HTTP 503,
  ``retry_after_s``); never a raw "database is locked".
- A corrupt or truncated file raises :class:`StoreDamaged`, one line that says how to recover.

Opening a store checks the schema revision with one query (Alembic's version table, read
without reflecting the schema first) against the newest revision named in
``migrations/versions`` (read from the files, not through Alembic); Alembic, which costs more to
import than a short command takes to run, loads only when the schema is behind, or ahead.

On PostgreSQL a session is a plain transaction in which the caller takes row locks with
``SELECT … FOR UPDATE``; a lock timeout, deadlock or serialization failure is a
:class:`StoreBusy` too.
"""

from __future__ import annotations

import fcntl
import random
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from shipyard.errors import StoreBusy, StoreDamaged, StoreError
from shipyard.store.revisions import MIGRATIONS, VERSION_TABLE, script_heads

if TYPE_CHECKING:
    from alembic.config import Config

SQLITE_BUSY_TIMEOUT_MS = 30_000
BUSY_BACKOFF_S = (0.005, 0.25)
"""First and largest sleep between attempts to begin a transaction that came back busy."""

_SQLITE_BUSY = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}
_SQLITE_DAMAGED = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
_POSTGRES_BUSY = {"40001", "40P01", "55P03"}  # serialization failure, deadlock, lock timeout


def _alembic_config(url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _make_engine(url: str, busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS) -> Engine:
    if url.startswith("sqlite"):
        # A file database keeps a pool of open connections: closing the last connection to a
        # WAL database checkpoints it, which made every short transaction pay for a checkpoint.
        pooling: dict[str, Any] = {} if ":memory:" in url else {"pool_size": 8, "max_overflow": 16}
        engine = create_engine(
            url,
            connect_args={"timeout": busy_timeout_ms / 1000, "check_same_thread": False},
            **pooling,
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, below
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            mode = conn.get_execution_options().get("sqlite_begin", "")
            readonly = mode == "READONLY"
            info = conn.connection.info  # lives as long as the pooled connection
            if info.get("query_only", False) != readonly:
                conn.exec_driver_sql(f"PRAGMA query_only={'ON' if readonly else 'OFF'}")
                info["query_only"] = readonly
            conn.exec_driver_sql("BEGIN" if readonly else f"BEGIN {mode}".strip())

        return engine
    engine = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)

    @event.listens_for(engine, "connect")
    def _bound_lock_waits(dbapi_conn: Any, _record: Any) -> None:
        with dbapi_conn.cursor() as cur:
            cur.execute(f"SET lock_timeout = {busy_timeout_ms}")
        dbapi_conn.commit()  # a SET inside a transaction that is rolled back would be undone

    return engine


class Store:
    """The metadata database.

    >>> store = Store("sqlite:///:memory:")   # doctest: +SKIP
    >>> with store.session() as s:             # a transaction: commit on success
    ...     s.add(thing)
    """

    def __init__(
        self,
        url: str,
        *,
        migrate: bool = True,
        busy_timeout_s: float | None = None,
    ) -> None:
        """``busy_timeout_s``: how long a transaction may wait for the write lock (SQLite) or a
        row lock (PostgreSQL) before :class:`StoreBusy`; default ``SQLITE_BUSY_TIMEOUT_MS``."""
        self.url = url
        self.dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
        if busy_timeout_s is None:
            busy_timeout_s = SQLITE_BUSY_TIMEOUT_MS / 1000
        self.busy_timeout_s = busy_timeout_s
        try:
            self.engine = _make_engine(url, max(1, round(busy_timeout_s * 1000)))
        except (SQLAlchemyError, ValueError, ImportError) as exc:
            raise StoreError(f"cannot open the metadata database {self._safe_url}: {exc}") from None
        self._readonly = sessionmaker(
            self.engine.execution_options(sqlite_begin="READONLY"), expire_on_commit=False
        )
        self._writing = sessionmaker(
            self.engine.execution_options(sqlite_begin="IMMEDIATE"), expire_on_commit=False
        )
        self._writing_here = threading.local()  # depth 1 while this thread holds a writer
        _ENGINES.add(self.engine)  # the engine may outlive this object: it is in cycles
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
    def session(self, *, readonly: bool = False, immediate: bool = True) -> Iterator[Session]:
        """A transaction: committed when the block ends, rolled back if it raises.

        It holds the write lock from its start (see the module's rule) unless ``readonly``;
        ``immediate`` is accepted for the callers that still say so: every writing session is.
        """
        nested = self.dialect == "sqlite" and getattr(self._writing_here, "depth", 0) > 0
        writes = not (readonly or nested)
        session, transaction = self._begin(self._writing if writes else self._readonly)
        if writes:
            self._writing_here.depth = 1
        try:
            with session, transaction:
                yield session
        except DBAPIError as exc:
            error = self.translate_error(exc)
            if error is None:
                raise  # a constraint or a bad statement: the caller's to handle
            raise error from exc
        finally:
            if writes:
                self._writing_here.depth = 0

    def _begin(self, factory: sessionmaker[Session]) -> tuple[Session, SessionTransaction]:
        """A session whose transaction has begun (on SQLite: holds the write lock, unless read
        only), retrying a busy answer with backoff until ``busy_timeout_s`` has passed."""
        deadline = time.monotonic() + self.busy_timeout_s
        pause = BUSY_BACKOFF_S[0]
        while True:
            session = factory()
            try:
                transaction = session.begin()
                session.connection()  # BEGIN [IMMEDIATE] now, before the caller's first statement
                return session, transaction
            except DBAPIError as exc:
                session.close()
                error = self.translate_error(exc)
                if error is None:
                    raise
                if not isinstance(error, StoreBusy) or time.monotonic() >= deadline:
                    raise error from exc
            except BaseException:
                session.close()
                raise
            time.sleep(min(pause * (0.5 + random.random()), max(deadline - time.monotonic(), 0)))
            pause = min(pause * 2, BUSY_BACKOFF_S[1])

    def translate_error(self, exc: DBAPIError) -> StoreError | None:
        """The store error a driver error means: busy, damaged, or another operational error;
        None for the rest (an integrity error, a bad statement), which callers handle."""
        orig = exc.orig
        code = getattr(orig, "sqlite_errorcode", None)
        if (code is not None and code & 0xFF in _SQLITE_BUSY) or (
            getattr(orig, "sqlstate", None) in _POSTGRES_BUSY
        ):
            return StoreBusy(
                f"the metadata database {self._safe_url} is busy: other writers hold its lock "
                f"(waited up to {self.busy_timeout_s:g} s); nothing was changed, try again",
                retry_after_s=min(max(1.0, self.busy_timeout_s / 10), 5.0),
            )
        if code is not None and code & 0xFF in _SQLITE_DAMAGED:
            return self._damaged(str(orig))
        if isinstance(exc, OperationalError):
            return StoreError(f"metadata database error ({self._safe_url}): {orig}")
        return None

    def _damaged(self, why: str) -> StoreDamaged:
        path = self.engine.url.database or self.url
        return StoreDamaged(
            f"the metadata database {path} is damaged ({why}). To recover: restore it from a "
            f"back-up; or save what can be read with `sqlite3 {path} .recover > dump.sql` and "
            f"load that into a new file (`sqlite3 new.db < dump.sql`); or start a fresh "
            f"workspace by moving {path} (and its -wal/-shm files) aside",
            path=path,
        )

    # -- migrations -------------------------------------------------------------------------
    def current_revisions(self) -> set[str]:
        """The schema revisions recorded in the database (Alembic's version table); none for a
        database no migration has touched."""
        with self.engine.connect() as conn:
            try:  # one query on every open; reflection only when it fails
                return set(conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())
            except DBAPIError:
                conn.rollback()
                if inspect(conn).has_table(VERSION_TABLE):
                    raise
            return set()

    def applied_revisions(self) -> set[str]:
        """Every migration applied to this database: its heads and all their ancestors."""
        from alembic.script import ScriptDirectory

        script = ScriptDirectory.from_config(_alembic_config(self.url))
        heads = tuple(self.current_revisions())
        return {rev.revision for rev in script.iterate_revisions(heads, "base") if rev is not None}

    def migrate(self) -> None:
        """Bring the schema to the newest revision this Shipyard knows; refuse a newer one."""
        try:
            current = self.current_revisions()
        except DBAPIError as exc:
            error = self.translate_error(exc)
            if error is None:
                raise
            if type(error) is StoreError:
                error = StoreError(
                    f"cannot reach the metadata database {self._safe_url}: {exc.orig}"
                )
            raise error from None
        if current and current == script_heads():
            return  # the common case, decided without importing Alembic
        from alembic import command
        from alembic.script import ScriptDirectory

        cfg = _alembic_config(self.url)
        script = ScriptDirectory.from_config(cfg)
        wanted = set(script.get_heads())
        known = {rev.revision for rev in script.walk_revisions()}
        if unknown := current - known:
            raise StoreError(
                f"the database {self._safe_url} has schema revision {sorted(unknown)}, "
                "made by a newer Shipyard; upgrade Shipyard to use it"
            )
        if current == wanted:
            return
        try:
            with (
                self._migration_lock(),
                self.engine.execution_options(sqlite_begin="IMMEDIATE").begin() as conn,
            ):
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "heads")
        except DBAPIError as exc:
            error = self.translate_error(exc)
            if error is None:
                raise
            raise error from None

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
_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()


def dispose_all() -> None:
    """Close the pooled connections of every store this process opened whose engine is still
    there: for a process about to end without collecting its garbage (SQLite checkpoints a
    WAL database as its last connection closes)."""
    for engine in list(_ENGINES):
        engine.dispose()
