"""DL4: bulk actions on deadlines, previewed, then applied item by item

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 01:24:54.577864
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import storage.models

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bulk_actions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("action", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("extend_ms", sa.BigInteger(), nullable=True),
        sa.Column("selection", sa.JSON(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("created_at", storage.models.columns.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("valid_until", storage.models.columns.UTCDateTime(timezone=True), nullable=False),
        sa.Column("deadlines", sa.Integer(), nullable=False),
        sa.Column("contracts", sa.Integer(), nullable=False),
        sa.Column("money", sa.JSON(), nullable=False),
        sa.Column("undoes", sa.Integer(), nullable=True),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
        sa.Column("applied_by", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
        sa.Column("applied_at", storage.models.columns.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "action IN ('pause', 'resume', 'extend', 'retry')", name="ck_bulk_actions_action"
        ),
        sa.CheckConstraint(
            "status IN ('previewed', 'running', 'done')", name="ck_bulk_actions_status"
        ),
        sa.ForeignKeyConstraint(
            ["undoes"],
            ["bulk_actions.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "bulk_action_items",
        sa.Column("bulk_id", sa.Integer(), nullable=False),
        sa.Column("deadline_id", sa.Integer(), nullable=False),
        sa.Column("contract_id", sa.Integer(), nullable=False),
        sa.Column("event", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("due_at", storage.models.columns.UTCDateTime(timezone=True), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("currency", sqlmodel.sql.sqltypes.AutoString(length=3), nullable=True),
        sa.Column("result", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=True),
        sa.Column("detail", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
        sa.Column("done_at", storage.models.columns.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "result IN ('done', 'skipped', 'failed')", name="ck_bulk_action_items_result"
        ),
        sa.ForeignKeyConstraint(
            ["bulk_id"],
            ["bulk_actions.id"],
        ),
        sa.ForeignKeyConstraint(
            ["deadline_id"],
            ["deadlines.id"],
        ),
        sa.PrimaryKeyConstraint("bulk_id", "deadline_id"),
    )


def downgrade() -> None:
    op.drop_table("bulk_action_items")
    op.drop_table("bulk_actions")
