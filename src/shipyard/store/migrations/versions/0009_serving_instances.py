"""serving instances: where each running model server answers, and its quota lease

Revision ID: 0009_serving_instances
Revises: 0008_monitoring
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_serving_instances"
down_revision = "0008_monitoring"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "serving_instances",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("url", sa.String(length=300), nullable=False),
        sa.Column("host", sa.String(length=200), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("workers", sa.Integer(), nullable=False),
        sa.Column("models", sa.JSON(), nullable=False),
        sa.Column("pool", sa.String(length=100), nullable=True),
        sa.Column("lease_id", sa.String(length=32), nullable=True),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("heartbeat_at", sa.Float(), nullable=False),
        sa.Column("ttl_s", sa.Float(), nullable=False),
        sa.Column("stopped_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_serving_instances")),
    )
    op.create_index(
        "ix_serving_instances_heartbeat",
        "serving_instances",
        ["stopped_at", "heartbeat_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_serving_instances_heartbeat", table_name="serving_instances")
    op.drop_table("serving_instances")
