"""serving instances: the machine a server runs on, and why its record was closed

Revision ID: 0012_serving_instance_machine
Revises: 0011_run_liveness_and_fencing
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_serving_instance_machine"
down_revision = "0011_run_liveness_and_fencing"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("serving_instances", sa.Column("machine", sa.String(length=200), nullable=True))
    op.add_column(
        "serving_instances", sa.Column("stop_reason", sa.String(length=200), nullable=True)
    )


def downgrade() -> None:
    with op.batch_alter_table("serving_instances") as batch:
        batch.drop_column("stop_reason")
        batch.drop_column("machine")
