"""The hand-written migrations create exactly the tables the models describe."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import shipyard.store.schema  # noqa: F401 - every table module, so the metadata is complete
from shipyard.store import Base, Store

MINE = {
    "registered_models",
    "model_versions",
    "model_aliases",
    "model_alias_events",
    "serving_windows",
    "serving_predictions",
    "serving_feedback",
}


def _table(diff: Any) -> str | None:
    op = diff[0] if isinstance(diff, list) else diff
    for item in op[1:]:
        name = getattr(item, "name", None) if not hasattr(item, "table") else item.table.name
        if isinstance(item, str):
            name = item
        if name:
            return str(name)
    return None


def test_migrations_match_the_models(store: Store) -> None:
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = compare_metadata(ctx, Base.metadata)
    mine = [d for d in diffs if _table(d) in MINE or any(t in str(d) for t in MINE)]
    assert mine == []
    assert {"0003_registry", "0005_serving"} <= store.applied_revisions()
