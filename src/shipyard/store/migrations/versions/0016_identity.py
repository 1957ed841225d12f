"""identities of the control plane: principals, API tokens (hashes only), role bindings

Revision ID: 0016_identity
Revises: 0015_run_monitor_settings
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016_identity"
down_revision = "0015_run_monitor_settings"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "principals",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("disabled_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_principals")),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("principal", sa.String(length=100), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("roles", sa.JSON(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=True),
        sa.Column("revoked_at", sa.Float(), nullable=True),
        sa.Column("last_used_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
    )
    op.create_index(op.f("ix_api_tokens_principal"), "api_tokens", ["principal"], unique=False)
    op.create_table(
        "role_bindings",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("principal", sa.String(length=100), nullable=False),
        sa.Column("role", sa.String(length=40), nullable=False),
        sa.Column("scope", sa.String(length=240), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_role_bindings")),
        sa.UniqueConstraint("principal", "role", "scope", name=op.f("uq_role_bindings_principal")),
    )
    op.create_index(
        op.f("ix_role_bindings_principal"), "role_bindings", ["principal"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_role_bindings_principal"), table_name="role_bindings")
    op.drop_table("role_bindings")
    op.drop_index(op.f("ix_api_tokens_principal"), table_name="api_tokens")
    op.drop_table("api_tokens")
    op.drop_table("principals")
