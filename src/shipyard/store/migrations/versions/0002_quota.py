"""quota tables: pools, members, leases, events, reservations

Revision ID: 0002_quota
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_quota"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "quota_pools",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("mode", sa.String(length=20), nullable=False),
        sa.Column("capacity", sa.JSON(), nullable=False),
        sa.Column("default_cap_fraction", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_quota_pools")),
    )
    op.create_table(
        "quota_members",
        sa.Column("pool", sa.String(length=100), nullable=False),
        sa.Column("pipeline", sa.String(length=200), nullable=False),
        sa.Column("share", sa.JSON(), nullable=False),
        sa.Column("cap", sa.JSON(), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["pool"],
            ["quota_pools.name"],
            name=op.f("fk_quota_members_pool_quota_pools"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pool", "pipeline", name=op.f("pk_quota_members")),
    )
    op.create_table(
        "quota_leases",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("pool", sa.String(length=100), nullable=False),
        sa.Column("pipeline", sa.String(length=200), nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("step", sa.String(length=200), nullable=False),
        sa.Column("step_run_id", sa.String(length=32), nullable=False),
        sa.Column("resources", sa.JSON(), nullable=False),
        sa.Column("used", sa.JSON(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("holder_pid", sa.Integer(), nullable=True),
        sa.Column("requested_at", sa.Float(), nullable=False),
        sa.Column("granted_at", sa.Float(), nullable=True),
        sa.Column("heartbeat_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["pool"],
            ["quota_pools.name"],
            name=op.f("fk_quota_leases_pool_quota_pools"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quota_leases")),
    )
    op.create_index("ix_quota_leases_pool_status", "quota_leases", ["pool", "status"])
    op.create_index("ix_quota_leases_run_id", "quota_leases", ["run_id"])
    op.create_table(
        "quota_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("pool", sa.String(length=100), nullable=False),
        sa.Column("lease_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("held_total", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quota_events")),
    )
    op.create_index("ix_quota_events_pool_id", "quota_events", ["pool", "id"])
    op.create_table(
        "quota_reservations",
        sa.Column("pool", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("resources", sa.JSON(), nullable=False),
        sa.Column("basis", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["pool"],
            ["quota_pools.name"],
            name=op.f("fk_quota_reservations_pool_quota_pools"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pool", "name", name=op.f("pk_quota_reservations")),
    )


def downgrade() -> None:
    op.drop_table("quota_reservations")
    op.drop_index("ix_quota_events_pool_id", table_name="quota_events")
    op.drop_table("quota_events")
    op.drop_index("ix_quota_leases_run_id", table_name="quota_leases")
    op.drop_index("ix_quota_leases_pool_status", table_name="quota_leases")
    op.drop_table("quota_leases")
    op.drop_table("quota_members")
    op.drop_table("quota_pools")
