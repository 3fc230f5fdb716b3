"""The `terms` table (TM1): every query on it is here. A terms row is written once and
never updated (which contracts run under which terms is `entities`': contracts')."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from storage import models

_t = models.TERMS


def by_fingerprint(conn: Connection, fingerprint: str) -> dict[str, Any] | None:
    row = conn.execute(sa.select(_t).where(_t.c.fingerprint == fingerprint)).mappings().first()
    return None if row is None else dict(row)


def by_name(conn: Connection, name: str) -> dict[str, Any] | None:
    row = conn.execute(sa.select(_t).where(_t.c.name == name)).mappings().first()
    return None if row is None else dict(row)


def load(conn: Connection, terms_id: int) -> dict[str, Any] | None:
    row = conn.execute(sa.select(_t).where(_t.c.id == terms_id)).mappings().first()
    return None if row is None else dict(row)


def insert(
    conn: Connection,
    *,
    name: str,
    fingerprint: str,
    values: dict[str, Any],
    at: datetime,
    by: str,
) -> int:
    """A new terms version; a concurrent insert of the same fingerprint or name breaks
    a unique index (`ConcurrentChange` at the storage boundary)."""
    statement = _t.insert().values(
        name=name, fingerprint=fingerprint, values=values, created_at=at, created_by=by
    )
    inserted = conn.execute(statement).inserted_primary_key
    assert inserted is not None
    return int(inserted[0])


def count(conn: Connection) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(_t)).scalar_one())


def listing(conn: Connection) -> list[dict[str, Any]]:
    """Every terms version, oldest first."""
    return [dict(row) for row in conn.execute(sa.select(_t).order_by(_t.c.id)).mappings()]
