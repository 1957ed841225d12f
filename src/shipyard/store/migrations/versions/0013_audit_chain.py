"""audit chain: a sequence number, mode and hashes per event, the chain's head, append-only

Existing events are chained in the order they were written (their ids), as mode ``embedded``
(every event so far was written by the CLI on the database). Then triggers make the table refuse
UPDATE and DELETE (and TRUNCATE on PostgreSQL), and the head row refuse DELETE.

Revision ID: 0013_audit_chain
Revises: 0012_serving_instance_machine
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shipyard.audit.chain import GENESIS, HEAD_ID, event_hash
from shipyard.audit.jcs import normalize

revision = "0013_audit_chain"
down_revision = "0012_serving_instance_machine"
branch_labels = None
depends_on = None

REFUSAL = "audit events are append-only: an event cannot be changed or deleted"

_events = sa.table(
    "audit_events",
    sa.column("id", sa.Integer()),
    sa.column("seq", sa.Integer()),
    sa.column("ts", sa.Float()),
    sa.column("actor", sa.String()),
    sa.column("mode", sa.String()),
    sa.column("action", sa.String()),
    sa.column("subject_kind", sa.String()),
    sa.column("subject_id", sa.String()),
    sa.column("detail", sa.JSON()),
    sa.column("prev_hash", sa.String()),
    sa.column("hash", sa.String()),
)

PG_UP = [
    f"""
    CREATE FUNCTION shipyard_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '{REFUSAL} (% on %)', TG_OP, TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege';
    END $$
    """,
    """
    CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION shipyard_audit_append_only()
    """,
    """
    CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION shipyard_audit_append_only()
    """,
    """
    CREATE TRIGGER audit_chain_keep_head BEFORE DELETE OR TRUNCATE ON audit_chain
    FOR EACH STATEMENT EXECUTE FUNCTION shipyard_audit_append_only()
    """,
]
PG_DOWN = [
    "DROP TRIGGER audit_chain_keep_head ON audit_chain",
    "DROP TRIGGER audit_events_no_truncate ON audit_events",
    "DROP TRIGGER audit_events_append_only ON audit_events",
    "DROP FUNCTION shipyard_audit_append_only()",
]
SQLITE_UP = [
    f"""
    CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
    BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END
    """,
    f"""
    CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
    BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END
    """,
    f"""
    CREATE TRIGGER audit_chain_keep_head BEFORE DELETE ON audit_chain
    BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END
    """,
]
SQLITE_DOWN = [
    "DROP TRIGGER audit_chain_keep_head",
    "DROP TRIGGER audit_events_no_delete",
    "DROP TRIGGER audit_events_no_update",
]


def upgrade() -> None:
    op.add_column("audit_events", sa.Column("seq", sa.Integer(), nullable=True))
    op.add_column("audit_events", sa.Column("mode", sa.String(length=20), nullable=True))
    op.add_column("audit_events", sa.Column("prev_hash", sa.String(length=64), nullable=True))
    op.add_column("audit_events", sa.Column("hash", sa.String(length=64), nullable=True))
    op.create_index("ix_audit_events_seq", "audit_events", ["seq"], unique=True)
    op.create_index("ix_audit_events_hash", "audit_events", ["hash"], unique=True)
    op.create_table(
        "audit_chain",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_chain")),
    )
    conn = op.get_bind()
    seq, prev = 0, GENESIS
    rows = conn.execute(sa.select(_events).order_by(_events.c.id)).mappings().all()
    for row in rows:
        seq += 1
        detail = normalize(row["detail"] or {})
        digest = event_hash(
            seq=seq,
            time=row["ts"],
            actor=row["actor"],
            mode="embedded",
            action=row["action"],
            subject=(row["subject_kind"], row["subject_id"]),
            details=detail,
            prev_hash=prev,
        )
        conn.execute(
            _events.update()
            .where(_events.c.id == row["id"])
            .values(seq=seq, mode="embedded", detail=detail, prev_hash=prev, hash=digest)
        )
        prev = digest
    conn.execute(
        sa.table("audit_chain", sa.column("id"), sa.column("seq"), sa.column("hash"))
        .insert()
        .values(id=HEAD_ID, seq=seq, hash=prev)
    )
    for statement in PG_UP if conn.dialect.name == "postgresql" else SQLITE_UP:
        op.execute(statement)


def downgrade() -> None:
    conn = op.get_bind()
    for statement in PG_DOWN if conn.dialect.name == "postgresql" else SQLITE_DOWN:
        op.execute(statement)
    op.drop_table("audit_chain")
    op.drop_index("ix_audit_events_hash", table_name="audit_events")
    op.drop_index("ix_audit_events_seq", table_name="audit_events")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("hash")
        batch.drop_column("prev_hash")
        batch.drop_column("mode")
        batch.drop_column("seq")
