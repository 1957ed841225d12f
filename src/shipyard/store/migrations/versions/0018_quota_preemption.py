"""quota pools carry a scheduling policy; leases carry expected ends, a start promise and
preemption marks

A pool's ``policy`` holds its preemption switch, grace period, backfill switch and the limits on
queued runs (a member's own limit beside its share). A lease's ``expected_s`` (how long its
holder is expected to take: history, at most the step's declared timeout) lets admission
backfill around a blocked head; ``start_promised_at`` is the earliest start promised to a
blocked head, past which nothing more is backfilled by its expected end; ``preempt_at`` marks
a lease being taken back (its holder stops by then); ``preemptible`` is true only for leases
whose holder can stop and retry (pipeline steps; not servers, reservations or older holders).

Revision ID: 0018_quota_preemption
Revises: 0017_control_plane_indexes
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018_quota_preemption"
down_revision = "0017_control_plane_indexes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("quota_pools") as batch:
        batch.add_column(sa.Column("policy", sa.JSON(), nullable=False, server_default="{}"))
    with op.batch_alter_table("quota_members") as batch:
        batch.add_column(sa.Column("max_queued_runs", sa.Integer(), nullable=True))
    with op.batch_alter_table("quota_leases") as batch:
        batch.add_column(sa.Column("expected_s", sa.Float(), nullable=True))
        batch.add_column(sa.Column("start_promised_at", sa.Float(), nullable=True))
        batch.add_column(sa.Column("preempt_at", sa.Float(), nullable=True))
        batch.add_column(
            sa.Column("preemptible", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("quota_leases") as batch:
        for column in ("preemptible", "preempt_at", "start_promised_at", "expected_s"):
            batch.drop_column(column)
    with op.batch_alter_table("quota_members") as batch:
        batch.drop_column("max_queued_runs")
    with op.batch_alter_table("quota_pools") as batch:
        batch.drop_column("policy")
