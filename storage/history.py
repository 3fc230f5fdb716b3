"""Every query on the history table: one row per transition, who, why and when (PA3)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from storage import models
from storage.db import id_in
from storage.statements import Statements

_h = models.HISTORY


def record(tx: Statements, values: dict[str, Any]) -> int:
    """Append a transition; its id (ledger entries, deadlines and events point to it).
    In a sweep's batch with ids taken ahead (`take_ids`), written with the batch."""
    return tx.insert_with_batch(_h, values)


def annotate(tx: Statements, history_id: int, payload: dict[str, Any]) -> None:
    """Replace a row's payload with what the transition found out (NT1: the changes)."""
    tx.amend(_h, history_id, {"payload": payload})


# The next id of the history sequence (PostgreSQL), read with a request's first reads.
NEXT_ID = sa.select(sa.func.nextval(sa.func.pg_get_serial_sequence("history", "id")).label("id"))


def take_ids(conn: Connection, count: int) -> list[int]:
    """`count` ids from the history sequence (PostgreSQL), to hand out in ascending
    order with `list.pop()`: rows of one contract stay in the order they were written."""
    query = sa.text(
        "SELECT nextval(pg_get_serial_sequence('history', 'id')) FROM generate_series(1, :n)"
    )
    return sorted(conn.execute(query, {"n": count}).scalars(), reverse=True)


def next_id(conn: Connection) -> int:
    """The id after the largest (for rows counted on from it while this transaction
    holds the only write lock: SQLite)."""
    query = sa.select(sa.func.coalesce(sa.func.max(_h.c.id), 0) + 1)
    return int(conn.execute(query).scalar_one())


def count_of(tx: Statements, entity: str, entity_id: int) -> int:
    """How many transitions an entity has had (a deadline's version)."""
    query = sa.select(sa.func.count()).where(_h.c.entity == entity, _h.c.entity_id == entity_id)
    return int(tx.scalar(query))


def counts_of(conn: Connection, entity: str, entity_ids: Sequence[int]) -> dict[int, int]:
    """`count_of` for many entities of a kind at once (those with none are left out)."""
    query = (
        sa.select(_h.c.entity_id, sa.func.count())
        .where(_h.c.entity == entity, id_in(conn, _h.c.entity_id, list(entity_ids)))
        .group_by(_h.c.entity_id)
    )
    return {int(entity_id): int(count) for entity_id, count in conn.execute(query)}


def of_entity(
    conn: Connection,
    entity: str,
    entity_id: int,
    *,
    after_id: int | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """An entity's transitions, oldest first: all, or up to `limit` after `after_id`."""
    query = sa.select(_h).where(_h.c.entity == entity, _h.c.entity_id == entity_id)
    if after_id is not None:
        query = query.where(_h.c.id > after_id)
    query = query.order_by(_h.c.id).limit(limit)
    return [dict(row) for row in conn.execute(query).mappings()]


def of_entities(conn: Connection, ids: dict[str, list[int]]) -> list[dict[str, Any]]:
    """The transitions of several entities (by kind), oldest first (ix_history_entity)."""
    wanted = [
        sa.and_(_h.c.entity == entity, _h.c.entity_id.in_(entity_ids))
        for entity, entity_ids in ids.items()
        if entity_ids
    ]
    if not wanted:
        return []
    query = sa.select(_h).where(sa.or_(*wanted)).order_by(_h.c.id)
    return [dict(row) for row in conn.execute(query).mappings()]
