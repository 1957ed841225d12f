"""a reference data set keeps a sample of its rows (multivariate drift, loss estimation)

Revision ID: 0020_monitoring_depth
Revises: 0017_control_plane_indexes
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020_monitoring_depth"
down_revision = "0018_quota_preemption"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("monitor_profiles") as batch:
        batch.add_column(sa.Column("sample_digest", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("monitor_profiles") as batch:
        batch.drop_column("sample_digest")
