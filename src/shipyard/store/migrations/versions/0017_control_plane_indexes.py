"""keyset indexes for the control plane's lists; step usage counters as 64-bit integers

The control plane pages runs, alerts, silences and leases on (time, id); without an index each
page sorted its whole table. A step's peak memory and its input's rows and bytes overflowed
PostgreSQL's 32-bit INTEGER at 2 GiB ("integer out of range").

Revision ID: 0017_control_plane_indexes
Revises: 0016_identity
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017_control_plane_indexes"
down_revision = "0016_identity"
branch_labels = None
depends_on = None

INDEXES = (
    ("ix_runs_created_at_id", "runs", ["created_at", "id"]),
    ("ix_runs_pipeline_created_at", "runs", ["pipeline", "created_at"]),
    ("ix_alerts_active_at_fingerprint", "alerts", ["active_at", "fingerprint"]),
    ("ix_silences_created_at_id", "silences", ["created_at", "id"]),
    ("ix_quota_leases_requested_at_id", "quota_leases", ["requested_at", "id"]),
)
WIDE = ("peak_rss_bytes", "input_rows", "input_bytes")


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns, unique=False)
    with op.batch_alter_table("step_runs") as batch:
        for column in WIDE:
            batch.alter_column(
                column, existing_type=sa.Integer(), type_=sa.BigInteger(), existing_nullable=True
            )


def downgrade() -> None:
    with op.batch_alter_table("step_runs") as batch:
        for column in WIDE:
            batch.alter_column(
                column, existing_type=sa.BigInteger(), type_=sa.Integer(), existing_nullable=True
            )
    for name, table, _ in INDEXES:
        op.drop_index(name, table_name=table)
