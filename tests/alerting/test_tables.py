"""The alerting tables: created by the migrations on SQLite and PostgreSQL, exactly as the
models declare them (Alembic's own comparison finds no difference)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from shipyard.store import Base, Store
from shipyard.store import alerting as tables

MINE = {
    t.__tablename__
    for t in (
        tables.AlertRecord,
        tables.AlertGroupRecord,
        tables.NotificationRecord,
        tables.SilenceRecord,
        tables.LeaderLease,
        tables.ScheduleState,
        tables.DaemonConfigRecord,
    )
}


def test_migration_creates_the_tables_the_models_declare(store: Store) -> None:
    assert "0004_alerting" in store.applied_revisions()
    assert set(inspect(store.engine).get_table_names()) >= MINE
    with store.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)

    def table_of(diff: object) -> str | None:
        item = diff[0] if isinstance(diff, list) else diff
        for part in item[1:] if isinstance(item, tuple) else ():
            name = getattr(part, "name", None)
            table = getattr(part, "table", None)
            if table is not None and getattr(table, "name", None) in MINE:
                return str(table.name)
            if name in MINE:
                return str(name)
            if isinstance(part, str) and part in MINE:
                return part
        return None

    assert [d for d in diffs if table_of(d)] == []
