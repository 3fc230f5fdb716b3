"""PA4: money decisions wait for a second admin

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 05:41:07.577752

A dispute resolution moving more than the configured amount is stored here by the admin
who proposes it, and happens only when a second, different admin approves it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import storage.models

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "approvals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("contract_id", sa.Integer(), nullable=True),
        sa.Column("entity", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("entity_id", sa.Integer(), nullable=False),
        sa.Column("event", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("entity_version", sa.Integer(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("proposed_by", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("proposed_at", storage.models.columns.UTCDateTime(timezone=True), nullable=False),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
        sa.Column("decided_by", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
        sa.Column("decided_at", storage.models.columns.UTCDateTime(timezone=True), nullable=True),
        sa.Column("decision_reason", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'approved', 'rejected', 'stale')", name="ck_approvals_status"
        ),
        sa.ForeignKeyConstraint(
            ["contract_id"],
            ["contracts.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_approvals_contract_id"), ["contract_id"], unique=False)
        batch_op.create_index(
            "uq_approvals_one_pending_per_entity",
            ["entity", "entity_id"],
            unique=True,
            sqlite_where=sa.text("status IN ('pending')"),
            postgresql_where=sa.text("status IN ('pending')"),
        )


def downgrade() -> None:
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_approvals_one_pending_per_entity",
            sqlite_where=sa.text("status IN ('pending')"),
            postgresql_where=sa.text("status IN ('pending')"),
        )
        batch_op.drop_index(batch_op.f("ix_approvals_contract_id"))

    op.drop_table("approvals")
