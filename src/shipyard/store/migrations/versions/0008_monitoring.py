"""monitoring: published profiles, monitor settings, judged runs

Revision ID: 0008_monitoring
Revises: 0007_merge
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_monitoring"
down_revision = "0007_merge"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "monitor_profiles",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("pipeline", sa.String(length=200), nullable=False),
        sa.Column("dataset", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=True),
        sa.Column("step", sa.String(length=200), nullable=True),
        sa.Column("label", sa.String(length=200), nullable=True),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("profile_digest", sa.String(length=64), nullable=False),
        sa.Column("schema", sa.JSON(), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitor_profiles")),
    )
    op.create_index(
        "ix_monitor_profiles_lookup",
        "monitor_profiles",
        ["pipeline", "dataset", "role", "ts"],
        unique=False,
    )
    op.create_index(
        op.f("ix_monitor_profiles_run_id"), "monitor_profiles", ["run_id"], unique=False
    )
    op.create_table(
        "monitor_settings",
        sa.Column("pipeline", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("monitors", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("pipeline", name=op.f("pk_monitor_settings")),
    )
    op.create_table(
        "monitored_runs",
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_monitored_runs")),
    )


def downgrade() -> None:
    op.drop_table("monitored_runs")
    op.drop_table("monitor_settings")
    op.drop_index(op.f("ix_monitor_profiles_run_id"), table_name="monitor_profiles")
    op.drop_index("ix_monitor_profiles_lookup", table_name="monitor_profiles")
    op.drop_table("monitor_profiles")
