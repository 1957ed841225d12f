"""quota leases granted by backfill are marked out of turn, so that they yield to the requests
they passed

``quota_leases.out_of_turn`` is true for a lease that backfill granted ahead of a request
before it in admission order. The scheduling pass promotes it (clears the flag) when its place
in strict order comes, and takes it back (``preempt_at``) when a request before it in that
order needs its room; leases older than this migration were granted in turn.

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


def downgrade() -> None:
    with op.batch_alter_table("quota_leases") as batch:
        batch.drop_column("out_of_turn")
