"""Quota's tables as the migrations build them match the models (both backends)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import shipyard.store.schema  # noqa: F401 - every table module, so the metadata is complete
from shipyard.store import Base, Store


def test_the_migrations_match_the_quota_models(store: Store) -> None:
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = compare_metadata(ctx, Base.metadata)
    assert [d for d in diffs if "quota_" in str(d)] == []
