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


def of_contract(conn: Connection, contract_id: int) -> list[dict[str, Any]]:
    """A contract's entries, in the order they were written."""
    query = sa.select(_l).where(_l.c.contract_id == contract_id).order_by(_l.c.id)
    return [dict(row) for row in conn.execute(query).mappings()]
