"""run liveness and lease fencing: who runs a run (pid, host, heartbeat), which process runs a
step, and a fencing token per lease grant

Revision ID: 0011_run_liveness_and_fencing
Revises: 0010_daemon_config
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_run_liveness_and_fencing"
down_revision = "0010_daemon_config"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("runner_host", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("runner_pid", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("runner_started_at", sa.Float(), nullable=True))
        batch.add_column(sa.Column("heartbeat_at", sa.Float(), nullable=True))
    with op.batch_alter_table("step_runs") as batch:
        batch.add_column(sa.Column("process_started_at", sa.Float(), nullable=True))
    with op.batch_alter_table("quota_leases") as batch:
        batch.add_column(sa.Column("fence", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("quota_pools") as batch:
        batch.add_column(sa.Column("last_fence", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("quota_pools") as batch:
        batch.drop_column("last_fence")
    with op.batch_alter_table("quota_leases") as batch:
        batch.drop_column("fence")
    with op.batch_alter_table("step_runs") as batch:
        batch.drop_column("process_started_at")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("heartbeat_at")
        batch.drop_column("runner_started_at")
        batch.drop_column("runner_pid")
        batch.drop_column("runner_host")
