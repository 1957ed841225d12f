"""The identity and control-plane migrations create exactly what the models describe, and a
step's usage counters hold values past 32 bits on both backends."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import shipyard.store.schema  # noqa: F401 - every table module, so the metadata is complete
from shipyard.store import Base, Store
from shipyard.store.tables import Run, StepRun

MINE = (
    "principals",
    "api_tokens",
    "role_bindings",
    "ix_runs_created_at_id",
    "ix_runs_pipeline_created_at",
    "ix_alerts_active_at_fingerprint",
    "ix_silences_created_at_id",
    "ix_quota_leases_requested_at_id",
    "peak_rss_bytes",
    "input_rows",
    "input_bytes",
)


def test_the_migrations_match_the_models(store: Store) -> None:
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = compare_metadata(ctx, Base.metadata)
    assert [d for d in diffs if any(t in str(d) for t in MINE)] == []


def test_a_step_over_2_gib_is_recorded(store: Store) -> None:
    big = 5 * 2**30
    with store.session() as s:
        run = Run(pipeline="p", kind="training", file="f.py", status="succeeded", created_at=1.0)
        s.add(run)
        s.flush()
        s.add(
            StepRun(
                run_id=run.id, step="fit", status="succeeded", peak_rss_bytes=big,
                input_rows=3 * 2**31, input_bytes=big,
            )
        )  # fmt: skip
    with store.session(readonly=True) as s:
        step = s.query(StepRun).one()
    assert (step.peak_rss_bytes, step.input_rows, step.input_bytes) == (big, 3 * 2**31, big)
