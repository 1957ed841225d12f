"""Join the branches each wing's first migration started from 0001 into one head.

Revision ID: 0007_merge
Revises: 0002_quota, 0003_registry, 0004_alerting, 0005_serving, 0006_deploy
"""

from __future__ import annotations

revision = "0007_merge"
down_revision = ("0002_quota", "0003_registry", "0004_alerting", "0005_serving", "0006_deploy")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
