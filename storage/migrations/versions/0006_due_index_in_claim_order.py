"""the due index in the sweep's order (due_at, id): a claim walks it and stops at its
batch, instead of sorting every due deadline when many share a due time

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 15:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _due_index(columns: list[str]) -> None:
    op.drop_index("ix_deadlines_due_pending", table_name="deadlines")
    op.create_index(
        "ix_deadlines_due_pending",
        "deadlines",
        columns,
        unique=False,
        sqlite_where=sa.text("status IN ('pending')"),
        postgresql_where=sa.text("status IN ('pending')"),
    )


def upgrade() -> None:
    _due_index(["due_at", "id", "event", "paused", "currency", "amount"])


def downgrade() -> None:
    _due_index(["due_at", "event", "paused", "currency", "amount"])
