"""quota leases granted by backfill are marked out of turn, so that they yield to the requests
they passed

``quota_leases.out_of_turn`` is true for a lease that backfill granted ahead of a request
before it in admission order. The scheduling pass promotes it (clears the flag) when its place
in strict order comes, and takes it back (``preempt_at``) when a request before it in that
order needs its room; leases older than this migration were granted in turn. The pass keeps
strict order's own account of time: ``in_turn_since`` is when a lease's place in strict order
came (its grant, or its promotion), and ``in_turn_until`` when strict order would have seen it
end (it ran ``ended_at − granted_at``, from ``in_turn_since``): a lease that started early by
backfill ends early in fact, not in strict order's account, where its room stays taken.

Revision ID: 0024_backfill_yield
Revises: 0023_release_cohorts
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0024_backfill_yield"
down_revision = "0023_release_cohorts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("quota_leases") as batch:
        batch.add_column(
            sa.Column("out_of_turn", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("in_turn_since", sa.Float(), nullable=True))
        batch.add_column(sa.Column("in_turn_until", sa.Float(), nullable=True))
    op.create_index("ix_quota_leases_pool_in_turn_until", "quota_leases", ["pool", "in_turn_until"])
    op.create_index("ix_quota_leases_pool_out_of_turn", "quota_leases", ["pool", "out_of_turn"])


def downgrade() -> None:
    op.drop_index("ix_quota_leases_pool_out_of_turn", "quota_leases")
    op.drop_index("ix_quota_leases_pool_in_turn_until", "quota_leases")
    with op.batch_alter_table("quota_leases") as batch:
        for column in ("in_turn_until", "in_turn_since", "out_of_turn"):
            batch.drop_column(column)
