"""serving: telemetry windows, logged predictions, late labels

Revision ID: 0005_serving
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_serving"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "serving_windows",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(length=100), nullable=False),
        sa.Column("window_start", sa.Float(), nullable=False),
        sa.Column("window_end", sa.Float(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("data_errors", sa.Integer(), nullable=False),
        sa.Column("latency_s", sa.JSON(), nullable=False),
        sa.Column("input_profile", sa.JSON(), nullable=True),
        sa.Column("prediction_profile", sa.JSON(), nullable=True),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_serving_windows")),
        sa.UniqueConstraint(
            "worker", "model", "version", "window_start", name="uq_serving_windows"
        ),
    )
    op.create_index(
        "ix_serving_windows_model_end", "serving_windows", ["model", "window_end"], unique=False
    )
    op.create_table(
        "serving_predictions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(length=100), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("prediction", sa.JSON(), nullable=False),
        sa.Column("confidence", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_serving_predictions")),
    )
    op.create_index(
        "ix_serving_predictions_request",
        "serving_predictions",
        ["model", "request_id"],
        unique=False,
    )
    op.create_index("ix_serving_predictions_ts", "serving_predictions", ["model", "ts"])
    op.create_table(
        "serving_feedback",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(length=100), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_serving_feedback")),
    )
    op.create_index(
        "ix_serving_feedback_request", "serving_feedback", ["model", "request_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_serving_feedback_request", table_name="serving_feedback")
    op.drop_table("serving_feedback")
    op.drop_index("ix_serving_predictions_ts", table_name="serving_predictions")
    op.drop_index("ix_serving_predictions_request", table_name="serving_predictions")
    op.drop_table("serving_predictions")
    op.drop_index("ix_serving_windows_model_end", table_name="serving_windows")
    op.drop_table("serving_windows")
