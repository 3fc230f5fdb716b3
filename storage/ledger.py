"""Every query on the ledger: append-only money movements (ES1, ES2)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from storage import models
from storage.statements import Statements

_l = models.LEDGER


def append(tx: Statements, values: dict[str, Any]) -> None:
    """One deposit, release or refund (with the batch, if the caller has one)."""
    tx.append(_l, values)


def of_contract(
    conn: Connection, contract_id: int, *, after_id: int | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """A contract's entries in the order they were written: all, or up to `limit` after
    `after_id`."""
    query = sa.select(_l).where(_l.c.contract_id == contract_id)
    if after_id is not None:
        query = query.where(_l.c.id > after_id)
    query = query.order_by(_l.c.id).limit(limit)
    return [dict(row) for row in conn.execute(query).mappings()]
