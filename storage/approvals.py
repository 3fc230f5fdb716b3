"""Money decisions waiting for a second admin (PA4): `approvals`. Every query on that
table is here."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from storage import models
from storage.statements import Statements

_a = models.APPROVALS


def create(tx: Statements, values: dict[str, Any]) -> int:
    """A proposed decision (one pending per entity: a second is a `UniqueViolation`)."""
    return tx.insert(_a, values)


def load(conn: Connection, approval_id: int) -> dict[str, Any] | None:
    query = sa.select(_a).where(_a.c.id == approval_id)
    row = conn.execute(query).mappings().first()
    return None if row is None else dict(row)


def pending_for(conn: Connection, entity: str, entity_id: int) -> dict[str, Any] | None:
    query = sa.select(_a).where(
        _a.c.entity == entity, _a.c.entity_id == entity_id, _a.c.status == "pending"
    )
    row = conn.execute(query).mappings().first()
    return None if row is None else dict(row)


def pending_of(conn: Connection, entity: str, entity_ids: list[int]) -> list[dict[str, Any]]:
    """The decisions waiting on any of these entities (one at most each)."""
    if not entity_ids:
        return []
    query = sa.select(_a).where(
        _a.c.entity == entity, _a.c.entity_id.in_(entity_ids), _a.c.status == "pending"
    )
    return [dict(row) for row in conn.execute(query).mappings()]


def listing(conn: Connection, status: str | None, limit: int) -> list[dict[str, Any]]:
    """Newest first; `status`: only those (pending: what waits for a second admin)."""
    query = sa.select(_a).order_by(_a.c.id.desc()).limit(limit)
    if status is not None:
        query = query.where(_a.c.status == status)
    return [dict(row) for row in conn.execute(query).mappings()]


def decide(conn: Connection, approval_id: int, values: dict[str, Any]) -> bool:
    """Close a pending decision (approved, rejected, stale); False if it was not pending."""
    done = conn.execute(
        _a.update().where(_a.c.id == approval_id, _a.c.status == "pending").values(values)
    )
    return done.rowcount == 1
