"""the daemon's recorded configuration; who claimed a notification

Revision ID: 0010_daemon_config
Revises: 0009_serving_instances
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_daemon_config"
down_revision = "0009_serving_instances"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "daemon_configs",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("recorded_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_daemon_configs")),
    )
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("claimed_by")
    op.drop_table("daemon_configs")
