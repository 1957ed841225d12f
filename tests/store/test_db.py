"""The metadata store: migrations, transactions, and both backends."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text

from shipyard.errors import StoreError
from shipyard.store import Store
from shipyard.store.db import MIGRATIONS
from shipyard.store.db import script_heads as heads_from_the_files
from shipyard.store.tables import AuditEvent, Run


def script_heads() -> set[str]:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return set(ScriptDirectory.from_config(config).get_heads())


FOUNDATION_TABLES = {
    "runs",
    "step_runs",
    "artifacts",
    "lineage",
    "metric_points",
    "findings",
    "audit_events",
    "pipelines",
}


def test_fresh_database_is_migrated_on_open(store: Store) -> None:
    tables = set(inspect(store.engine).get_table_names())
    assert tables >= FOUNDATION_TABLES
    assert store.current_revisions() == script_heads()


def test_reopening_an_existing_database_keeps_its_rows(db_url: str) -> None:
    first = Store(db_url)
    with first.session() as s:
        s.add(
            Run(
                id="r1",
                pipeline="p",
                kind="data",
                file="f.py",
                status="succeeded",
                created_at=time.time(),
            )
        )
    first.dispose()
    again = Store(db_url)
    with again.session() as s:
        assert s.get(Run, "r1") is not None
    again.dispose()


def test_the_migrations_have_one_head() -> None:
    assert len(script_heads()) == 1


class TestOpeningWithoutAlembic:
    """Opening a store whose schema is current decides so from the version files, without
    importing Alembic; a schema that is behind still migrates through Alembic."""

    def test_the_heads_read_from_the_files_are_alembics(self) -> None:
        assert heads_from_the_files() == script_heads()

    def test_a_current_store_opens_without_importing_alembic(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path / 'x.db'}"
        Store(url).dispose()  # created and migrated: Alembic runs here
        probe = (
            "import sys; from shipyard.store import Store; "
            f"s = Store({url!r}); print(sorted(s.current_revisions())); "
            "print('alembic' in sys.modules)"
        )
        out = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.split("\n")[:2] == [str(sorted(script_heads())), "False"]

    def test_a_store_behind_is_still_migrated(self, tmp_path: Path) -> None:
        from alembic import command

        from shipyard.store.db import _alembic_config

        url = f"sqlite:///{tmp_path / 'x.db'}"
        with Store(url, migrate=False).engine.begin() as conn:
            cfg = _alembic_config(url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0011_run_liveness_and_fencing")
        s = Store(url)
        assert s.current_revisions() == script_heads()
        columns = {c["name"] for c in inspect(s.engine).get_columns("serving_instances")}
        assert {"machine", "stop_reason"} <= columns
        s.dispose()

    def test_version_files_it_cannot_read_leave_the_decision_to_alembic(
        self, db_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr("shipyard.store.db.script_heads", lambda: frozenset())
        s = Store(db_url)
        assert s.current_revisions() == script_heads()
        assert set(inspect(s.engine).get_table_names()) >= FOUNDATION_TABLES
        s.dispose()


def test_a_database_migrated_to_an_older_revision_is_upgraded(db_url: str) -> None:
    from alembic import command

    from shipyard.store.db import _alembic_config

    s = Store(db_url, migrate=False)
    with s.engine.begin() as conn:
        cfg = _alembic_config(db_url)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    assert s.current_revisions() == {"0001"}
    s.migrate()
    assert s.current_revisions() == script_heads()
    assert "quota_leases" in set(inspect(s.engine).get_table_names())
    s.dispose()


def test_a_database_from_a_newer_shipyard_is_refused(db_url: str) -> None:
    s = Store(db_url)
    with s.engine.begin() as conn:
        conn.execute(text("DELETE FROM alembic_version"))
        conn.execute(text("INSERT INTO alembic_version (version_num) VALUES ('zz_future')"))
    s.dispose()
    with pytest.raises(StoreError, match="newer Shipyard"):
        Store(db_url)


def test_a_failed_transaction_changes_nothing(store: Store) -> None:
    with pytest.raises(RuntimeError), store.session() as s:
        s.add(AuditEvent(ts=1.0, actor="a", action="approve", subject_kind="x", subject_id="1"))
        s.flush()
        raise RuntimeError("boom")
    with store.session() as s:
        assert s.scalars(select(AuditEvent)).all() == []


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = Store(f"sqlite:///{tmp_path / 'x.db'}")
    with s.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000


def test_an_unreachable_postgres_gives_a_clear_error() -> None:
    with pytest.raises(StoreError, match="cannot reach"):
        Store("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")
