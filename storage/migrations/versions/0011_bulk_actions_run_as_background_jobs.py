"""DL4: a bulk action runs as a background job: who runs it, until when (its lease)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 05:00:00.000000

An applied bulk action is `running` until every item has a result. Whoever runs it (a
worker, or the CLI that applied it) holds it by a lease on the database's clock (DL2);
one whose runner died is taken over when the lease lapses, and resumes at its first item
without a result.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.models

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("bulk_actions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("runner", sa.String(length=100), nullable=True))
        batch_op.add_column(
            sa.Column("lease_until", storage.models.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("started_at", storage.models.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("bulk_actions", schema=None) as batch_op:
        batch_op.drop_column("started_at")
        batch_op.drop_column("lease_until")
        batch_op.drop_column("runner")
