"""release cohorts: the canary's cohort travels with the traffic split and stays with its rollout

``traffic_splits.cohort`` (on the canary's row) says how the model server draws the canary's
users: the rollout whose hash salts the buckets, the header or cookie matches of the targeted
steps entered so far, and the earlier rollouts whose canary users are kept out.
``rollouts.cohort`` keeps the part frozen when the rollout first moved traffic (the excluded
rollouts and the share of users left eligible), so that later steps, and later rollouts that
exclude this one's users, recompute the same buckets.

Revision ID: 0023_release_cohorts
Revises: 0021_trace_ids
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023_release_cohorts"
down_revision = "0021_trace_ids"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("traffic_splits") as batch:
        batch.add_column(sa.Column("cohort", sa.JSON(), nullable=True))
    with op.batch_alter_table("rollouts") as batch:
        batch.add_column(sa.Column("cohort", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rollouts") as batch:
        batch.drop_column("cohort")
    with op.batch_alter_table("traffic_splits") as batch:
        batch.drop_column("cohort")
