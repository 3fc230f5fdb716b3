"""TM1, TM2: terms versions, contracts' terms, migration plans

Contracts from before get their terms on the first start after this revision (the
settings then in force are the terms they were running under: `workflows.terms`).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 00:02:28.604340
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import storage.models

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "terms",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("fingerprint", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("values", sa.JSON(), nullable=False),
        sa.Column("created_at", storage.models.columns.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("fingerprint"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "terms_plans",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("to_terms_id", sa.Integer(), nullable=False),
        sa.Column("selection", sa.JSON(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("created_at", storage.models.columns.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("valid_until", storage.models.columns.UTCDateTime(timezone=True), nullable=False),
        sa.Column("contracts", sa.Integer(), nullable=False),
        sa.Column("deadlines", sa.Integer(), nullable=False),
        sa.Column("due_at_once", sa.Integer(), nullable=False),
        sa.Column("forecast", sa.JSON(), nullable=False),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
        sa.Column("applied_by", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
        sa.Column("applied_at", storage.models.columns.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('planned', 'applying', 'applied')", name="ck_terms_plans_status"
        ),
        sa.ForeignKeyConstraint(
            ["to_terms_id"],
            ["terms.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "terms_plan_contracts",
        sa.Column("plan_id", sa.Integer(), nullable=False),
        sa.Column("contract_id", sa.Integer(), nullable=False),
        sa.Column("from_terms_id", sa.Integer(), nullable=False),
        sa.Column("applied_at", storage.models.columns.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["contract_id"],
            ["contracts.id"],
        ),
        sa.ForeignKeyConstraint(
            ["from_terms_id"],
            ["terms.id"],
        ),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["terms_plans.id"],
        ),
        sa.PrimaryKeyConstraint("plan_id", "contract_id"),
    )
    op.create_table(
        "terms_plan_deadlines",
        sa.Column("plan_id", sa.Integer(), nullable=False),
        sa.Column("deadline_id", sa.Integer(), nullable=False),
        sa.Column("contract_id", sa.Integer(), nullable=False),
        sa.Column("entity", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("entity_id", sa.Integer(), nullable=False),
        sa.Column("event", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("due_before", storage.models.columns.UTCDateTime(timezone=True), nullable=False),
        sa.Column("due_after", storage.models.columns.UTCDateTime(timezone=True), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("currency", sqlmodel.sql.sqltypes.AutoString(length=3), nullable=True),
        sa.ForeignKeyConstraint(
            ["deadline_id"],
            ["deadlines.id"],
        ),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["terms_plans.id"],
        ),
        sa.PrimaryKeyConstraint("plan_id", "deadline_id"),
    )
    with op.batch_alter_table("terms_plan_deadlines", schema=None) as batch_op:
        batch_op.create_index(
            "ix_terms_plan_deadlines_contract", ["plan_id", "contract_id"], unique=False
        )

    with op.batch_alter_table("contracts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("terms_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_contracts_terms_id"), ["terms_id"], unique=False)
        batch_op.create_foreign_key("fk_contracts_terms_id", "terms", ["terms_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("contracts", schema=None) as batch_op:
        batch_op.drop_constraint("fk_contracts_terms_id", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_contracts_terms_id"))
        batch_op.drop_column("terms_id")

    with op.batch_alter_table("terms_plan_deadlines", schema=None) as batch_op:
        batch_op.drop_index("ix_terms_plan_deadlines_contract")

    op.drop_table("terms_plan_deadlines")
    op.drop_table("terms_plan_contracts")
    op.drop_table("terms_plans")
    op.drop_table("terms")
