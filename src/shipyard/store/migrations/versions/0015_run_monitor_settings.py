"""runs keep their pipeline's monitor settings from when they were created

Revision ID: 0015_run_monitor_settings
Revises: 0014_readiness_drills
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_run_monitor_settings"
down_revision = "0014_readiness_drills"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("monitors", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("monitors")
