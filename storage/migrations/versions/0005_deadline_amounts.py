"""deadlines keep what they move (amount, currency), and the due index covers the
liability forecast

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 12:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("deadlines", schema=None) as batch_op:
        batch_op.add_column(sa.Column("amount", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("currency", sa.String(length=3), nullable=True))
    op.drop_index("ix_deadlines_due_pending", table_name="deadlines")
    op.create_index(
        "ix_deadlines_due_pending",
        "deadlines",
        ["due_at", "event", "paused", "currency", "amount"],
        unique=False,
        sqlite_where=sa.text("status IN ('pending')"),
        postgresql_where=sa.text("status IN ('pending')"),
    )
    # Pending deadlines scheduled before this revision: what they move, from their entity.
    op.execute(
        "UPDATE deadlines SET currency = (SELECT currency FROM contracts "
        "WHERE contracts.id = deadlines.contract_id) WHERE status = 'pending'"
    )
    op.execute(
        "UPDATE deadlines SET amount = (SELECT CASE WHEN m.amount < m.escrow THEN m.amount "
        "ELSE m.escrow END FROM milestones m WHERE m.id = deadlines.entity_id) "
        "WHERE status = 'pending' AND event = 'auto_approve'"
    )
    op.execute(
        "UPDATE deadlines SET amount = (SELECT r.amount FROM refunds r "
        "WHERE r.id = deadlines.entity_id) "
        "WHERE status = 'pending' AND event = 'refund_by_default'"
    )


def downgrade() -> None:
    op.drop_index("ix_deadlines_due_pending", table_name="deadlines")
    op.create_index(
        "ix_deadlines_due_pending",
        "deadlines",
        ["due_at"],
        unique=False,
        sqlite_where=sa.text("status IN ('pending')"),
        postgresql_where=sa.text("status IN ('pending')"),
    )
    with op.batch_alter_table("deadlines", schema=None) as batch_op:
        batch_op.drop_column("currency")
        batch_op.drop_column("amount")
