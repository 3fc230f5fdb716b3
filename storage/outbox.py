"""Every query on the outbox: the events transitions publish (NT1), in commit order.

The engine appends an event in the transition's transaction; the relay gives committed
events their feed positions (`workflows/feed.py`); readers page through by position.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from storage import models
from storage.writes import Writes

_o = models.OUTBOX
_SET_POSITION = (
    _o.update().where(_o.c.id == sa.bindparam("pk")).values(position=sa.bindparam("new_position"))
)


def append(w: Writes, values: dict[str, Any]) -> None:
    """Publish an event (with the batch, if the caller has one)."""
    w.append(_o, values)


def has_unsequenced(conn: Connection) -> bool:
    """Cheap: walks the partial index of unsequenced events to its first row."""
    query = sa.select(_o.c.id).where(_o.c.position.is_(None)).limit(1)
    return conn.execute(query).first() is not None


def unsequenced(conn: Connection, limit: int) -> list[Any]:
    """Committed events without a feed position yet (id, type), in commit order."""
    query = sa.select(_o.c.id, _o.c.type).where(_o.c.position.is_(None)).order_by(_o.c.id)
    return list(conn.execute(query.limit(limit)).all())


def set_positions(conn: Connection, positions: list[dict[str, int]]) -> None:
    """Give events (`pk`) their feed positions (`new_position`)."""
    conn.execute(_SET_POSITION, positions)


def after(conn: Connection, position: int, limit: int) -> list[Any]:
    """Sequenced events after feed position `position`, in order."""
    query = (
        sa.select(_o)
        .where(_o.c.position > position, _o.c.position.is_not(None))
        .order_by(_o.c.position)
        .limit(limit)
    )
    return list(conn.execute(query).all())
