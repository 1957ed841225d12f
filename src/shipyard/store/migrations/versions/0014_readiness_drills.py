"""readiness drills: when each drill ran, how long its signals took, and its cleanup

Revision ID: 0014_readiness_drills
Revises: 0013_audit_chain
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_readiness_drills"
down_revision = "0013_audit_chain"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "readiness_drills",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=30), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("passed", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("signals", sa.JSON(), nullable=False),
        sa.Column("cleanup", sa.JSON(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_readiness_drills")),
    )
    op.create_index(
        "ix_readiness_drills_kind",
        "readiness_drills",
        ["kind", "subject", "ended_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_readiness_drills_kind", table_name="readiness_drills")
    op.drop_table("readiness_drills")
