"""trace ids: the serving requests whose W3C trace is kept, and the traces a canary verdict saw

``serving_traces`` holds one row per traced request (every refused or failed one, and those
whose caller sent a ``traceparent``), written with its window; ``rollout_verdicts.trace_ids``
names the traces of the canary's failed and slowest requests behind a failing look, so that
``shipyard trace TRACE_ID`` follows a bad request to the rollback it caused.

Revision ID: 0021_trace_ids
Revises: 0017_control_plane_indexes
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021_trace_ids"
down_revision = "0020_monitoring_depth"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "serving_traces",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("trace_id", sa.String(32), nullable=False),
        sa.Column("span_id", sa.String(16), nullable=False),
        sa.Column("parent_id", sa.String(16), nullable=True),
        sa.Column("request_id", sa.String(100), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(100), nullable=False),
        sa.Column("window_start", sa.Float(), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_serving_traces")),
    )
    op.create_index("ix_serving_traces_trace", "serving_traces", ["trace_id"])
    op.create_index("ix_serving_traces_model_ts", "serving_traces", ["model", "version", "ts"])
    with op.batch_alter_table("rollout_verdicts") as batch:
        batch.add_column(sa.Column("trace_ids", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rollout_verdicts") as batch:
        batch.drop_column("trace_ids")
    op.drop_index("ix_serving_traces_model_ts", table_name="serving_traces")
    op.drop_index("ix_serving_traces_trace", table_name="serving_traces")
    op.drop_table("serving_traces")
