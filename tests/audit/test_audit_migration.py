"""Migration 0013 chains the audit rows a database already holds, in the order they were
written, and the chain goes on from them."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, insert, select

import shipyard.store.schema  # noqa: F401 - every table module, so the metadata is complete
from shipyard import audit
from shipyard.store import Base, Store
from shipyard.store.db import _alembic_config
from shipyard.store.tables import AuditEvent

BEFORE = "0012_serving_instance_machine"


def test_existing_events_are_chained_in_their_order_and_appends_follow(db_url: str) -> None:
    command.upgrade(_alembic_config(db_url), BEFORE)
    legacy = create_engine(db_url)
    rows = [
        # written before the chain, by the CLI; one detail holds a NaN (SQLite kept the token)
        {"ts": 30.0, "actor": "carol", "action": "model.register", "subject_kind": "model_version",
         "subject_id": "digits/1", "detail": {"digest": "ab", "flavor": "sklearn"}},
        {"ts": 10.0, "actor": "dave", "action": "policy.set", "subject_kind": "model",
         "subject_id": "digits", "detail": {"policy": {"canary": {"steps": []}}}},
        {"ts": 20.0, "actor": "alice", "action": "gate.failed", "subject_kind": "model_version",
         "subject_id": "digits/1",
         "detail": {"metrics": {"roc_auc": float("nan") if "sqlite" in db_url else 0.5}}},
    ]  # fmt: skip
    with legacy.begin() as conn:
        conn.execute(insert(AuditEvent.__table__), rows)  # the columns 0012 has
    legacy.dispose()

    store = Store(db_url)  # migrates to the head
    try:
        verdict = audit.verify(store)
        assert verdict.ok, verdict.tampering
        assert verdict.events == verdict.head_seq == 3
        with store.session(readonly=True) as s:
            chained = list(s.scalars(select(AuditEvent).order_by(AuditEvent.id)))
        assert [r.seq for r in chained] == [1, 2, 3]  # the order written, not the times
        assert [r.actor for r in chained] == ["carol", "dave", "alice"]
        assert {r.mode for r in chained} == {"embedded"}

        with store.session() as s:
            audit.record(
                s, actor="erin", action="model.alias", subject=("model", "digits"), now=40.0
            )
        verdict = audit.verify(store)
        assert verdict.ok and verdict.events == 4
        newest = audit.list_events(store, limit=1).events[0]
        assert newest.seq == 4 and newest.prev_hash == chained[-1].hash
    finally:
        store.dispose()


def test_the_migration_creates_exactly_what_the_models_describe(store: Store) -> None:
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = compare_metadata(ctx, Base.metadata)
    assert [d for d in diffs if "audit_" in str(d)] == []
