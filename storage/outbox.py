"""Every query on the outbox and the feed state: the events transitions publish (NT1),
in commit order.

The engine appends an event in the transition's transaction; the relay gives committed
events their feed positions (`workflows/feed.py`); readers page through by position.
"""

from __future__ import annotations

import os
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from storage import models
from storage.dialect import adapter_of
from storage.statements import Statements

_o = models.OUTBOX
_feed = models.FEED_STATE
_SET_POSITION = (
    _o.update().where(_o.c.id == sa.bindparam("pk")).values(position=sa.bindparam("new_position"))
)


def append(tx: Statements, values: dict[str, Any]) -> None:
    """Publish an event (with the batch, if the caller has one) under a new event id."""
    tx.append(_o, {"event_id": new_event_id(), **values})


_VARIANT = "89ab"  # RFC 9562: the two top bits of the variant nibble are 10
_AHEAD = 256
_random_hex: list[str] = []


def new_event_id() -> str:
    """A random (version 4) UUID as text, as `str(uuid.uuid4())` gives: from 16 random
    bytes of the OS, taken 256 ids at a time (a sweep publishes an event per deadline;
    `uuid.uuid4()` costs four times as much, most of it building the UUID object)."""
    if not _random_hex:
        raw = os.urandom(16 * _AHEAD).hex()
        _random_hex.extend(raw[i : i + 32] for i in range(0, len(raw), 32))
    h = _random_hex.pop()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


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


def lock_feed(conn: Connection) -> int:
    """Lock the one `feed_state` row (one relay at a time); the last position given."""
    adapter = adapter_of(conn)
    conn.execute(adapter.insert(_feed).values(id=1, last_position=0).on_conflict_do_nothing())
    query = sa.select(_feed.c.last_position).where(_feed.c.id == 1)
    if adapter.locks_rows:
        query = query.with_for_update()
    return int(conn.execute(query).scalar_one())


def set_last_position(conn: Connection, position: int) -> None:
    conn.execute(_feed.update().where(_feed.c.id == 1).values(last_position=position))
