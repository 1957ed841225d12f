"""The drills' table: created by its migration exactly as the model declares it."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import shipyard.store.schema  # noqa: F401 - every table module, so the metadata is complete
from shipyard.store import Base, Store


def test_the_migration_matches_the_model(store: Store) -> None:
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = compare_metadata(ctx, Base.metadata)
    assert [d for d in diffs if "readiness_drills" in str(d)] == []
    assert "0014_readiness_drills" in store.applied_revisions()
