"""DL1: a paused deadline keeps the time it had left (when, by whom, how long)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 01:05:00.000000

Deadlines paused before it have no time left recorded: resumed, they fall due at their
due date as before (at once if it has passed).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.models

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("deadlines", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("paused_at", storage.models.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("paused_by", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("paused_left_ms", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deadlines", schema=None) as batch_op:
        batch_op.drop_column("paused_left_ms")
        batch_op.drop_column("paused_by")
        batch_op.drop_column("paused_at")
