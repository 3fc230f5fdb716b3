"""contract search: contracts by state, money held in a currency, party-id prefix and title words (the last two on
PostgreSQL, ignoring case), a contract's pending deadlines, its held-back ones

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 10:00:00.000000

The console's search and its "needs attention" counts (storage.search) on a million
contracts. The prefix and title indexes exist on PostgreSQL only (`search_indexes`
creates them there and nowhere else); SQLite's case-blind LIKE scans the contracts
table, which stays quick at an embedded deployment's size.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from storage.models.lifecycles import search_indexes

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PENDING = "status = 'pending'"
_HELD_BACK = "status = 'pending' AND (paused OR failed_at IS NOT NULL)"


def _where(condition: str) -> dict[str, sa.TextClause]:
    return {"sqlite_where": sa.text(condition), "postgresql_where": sa.text(condition)}


def _search_indexes() -> list[sa.Index]:
    columns = (sa.Column(name, sa.String) for name in ("client_id", "freelancer_id", "title"))
    table = sa.Table("contracts", sa.MetaData(), *columns, *search_indexes())
    return sorted(table.indexes, key=lambda index: str(index.name))


def upgrade() -> None:
    op.create_index("ix_contracts_state", "contracts", ["state", "id"])
    op.create_index("ix_contracts_currency_held", "contracts", ["currency", "held"])
    op.create_index(
        "ix_deadlines_contract_pending", "deadlines", ["contract_id", "due_at"], **_where(_PENDING)
    )
    op.create_index("ix_deadlines_held_back", "deadlines", ["contract_id"], **_where(_HELD_BACK))
    for index in _search_indexes():
        index.create(op.get_bind())


def downgrade() -> None:
    for index in _search_indexes():
        index.drop(op.get_bind())
    op.drop_index("ix_deadlines_held_back", table_name="deadlines")
    op.drop_index("ix_deadlines_contract_pending", table_name="deadlines")
    op.drop_index("ix_contracts_currency_held", table_name="contracts")
    op.drop_index("ix_contracts_state", table_name="contracts")
