"""The hand-written monitoring migration creates exactly the tables the models describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import shipyard.store.schema  # noqa: F401 - every table module, so the metadata is complete
from shipyard.store import Base, Store

MINE = ("monitor_profiles", "monitor_settings", "monitored_runs")


def test_the_monitoring_migration_matches_its_models(store: Store) -> None:
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = compare_metadata(ctx, Base.metadata)
    assert [d for d in diffs if any(t in str(d) for t in MINE)] == []
    with store.engine.connect() as conn:
        names = set(conn.dialect.get_table_names(conn))
    assert set(MINE) <= names
