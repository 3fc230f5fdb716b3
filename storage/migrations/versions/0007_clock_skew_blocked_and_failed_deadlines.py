"""DL2 and DL3: a worker's clock skew, deadlines waiting on a lock, failed deadlines

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 22:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.models

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("clock_skew_seconds", sa.Float(), nullable=True))
    with op.batch_alter_table("deadlines", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("blocked_since", storage.models.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("failed_at", storage.models.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("deadlines", schema=None) as batch_op:
        batch_op.drop_column("failed_at")
        batch_op.drop_column("blocked_since")
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.drop_column("clock_skew_seconds")
