"""The bulk actions on deadlines (DL4): `bulk_actions` and `bulk_action_items`. Every
query on those tables is here."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from storage import models
from storage.statements import Statements

_b = models.BULK_ACTIONS
_i = models.BULK_ACTION_ITEMS


def create(conn: Connection, action: dict[str, Any], items: list[dict[str, Any]]) -> int:
    inserted = conn.execute(_b.insert().values(action)).inserted_primary_key
    assert inserted is not None
    bulk_id = int(inserted[0])
    if items:
        conn.execute(_i.insert(), [{**item, "bulk_id": bulk_id} for item in items])
    return bulk_id


def load(conn: Connection, bulk_id: int) -> dict[str, Any] | None:
    row = conn.execute(sa.select(_b).where(_b.c.id == bulk_id)).mappings().first()
    return None if row is None else dict(row)


def listing(conn: Connection, limit: int) -> list[dict[str, Any]]:
    rows = conn.execute(sa.select(_b).order_by(_b.c.id.desc()).limit(limit)).mappings()
    return [dict(row) for row in rows]


def update(conn: Connection, bulk_id: int, values: dict[str, Any]) -> None:
    conn.execute(_b.update().where(_b.c.id == bulk_id).values(values))


def claim(
    conn: Connection, runner: str, now: datetime, until: datetime, bulk_id: int | None = None
) -> int | None:
    """Take a running bulk action (`bulk_id`, or the oldest) for `runner` until `until`:
    one no one holds, whose lease lapsed (its runner died) or that `runner` holds
    already. Its id, or None if there is none to take."""
    free = sa.or_(_b.c.runner.is_(None), _b.c.lease_until < now, _b.c.runner == runner)
    query = sa.select(_b.c.id).where(_b.c.status == "running", free)
    if bulk_id is not None:
        query = query.where(_b.c.id == bulk_id)
    for (found,) in conn.execute(query.order_by(_b.c.id).limit(5)):
        taken = conn.execute(  # the same test again: of two runners, one takes it
            _b.update()
            .where(_b.c.id == found, _b.c.status == "running", free)
            .values(runner=runner, lease_until=until)
        )
        if taken.rowcount == 1:
            return int(found)
    return None


def renew(conn: Connection, bulk_id: int, runner: str, until: datetime) -> bool:
    """Extend `runner`'s lease; False if another runner has taken the action over."""
    renewed = conn.execute(
        _b.update()
        .where(_b.c.id == bulk_id, _b.c.runner == runner, _b.c.status == "running")
        .values(lease_until=until)
    )
    return renewed.rowcount == 1


def let_go(conn: Connection, bulk_id: int, runner: str) -> None:
    """`runner` stops before the end (a worker stopping): another may resume it at once."""
    conn.execute(
        _b.update()
        .where(_b.c.id == bulk_id, _b.c.runner == runner)
        .values(runner=None, lease_until=None)
    )


def any_running(conn: Connection, bulk_id: int | None = None) -> bool:
    """Whether a bulk action (`bulk_id`, or any) is applied and not finished: a read,
    so a worker's idle poll takes no write lock (SQLite's one writer)."""
    query = sa.select(_b.c.id).where(_b.c.status == "running")
    if bulk_id is not None:
        query = query.where(_b.c.id == bulk_id)
    return conn.execute(query.limit(1)).first() is not None


def items(
    conn: Connection, bulk_id: int, *, unfinished: bool = False, limit: int | None = None
) -> list[dict[str, Any]]:
    """Its items by deadline id; `unfinished`: those without a result yet."""
    query = sa.select(_i).where(_i.c.bulk_id == bulk_id)
    if unfinished:
        query = query.where(_i.c.result.is_(None))
    query = query.order_by(_i.c.deadline_id)
    if limit is not None:
        query = query.limit(limit)
    return [dict(row) for row in conn.execute(query).mappings()]


def results(conn: Connection, bulk_id: int) -> dict[str, int]:
    """How many items are done, skipped, failed or waiting (None)."""
    query = (
        sa.select(_i.c.result, sa.func.count()).where(_i.c.bulk_id == bulk_id).group_by(_i.c.result)
    )
    return {str(result or "waiting"): count for result, count in conn.execute(query)}


_RESULT = (
    _i.update()
    .where(_i.c.bulk_id == sa.bindparam("b_bulk"), _i.c.deadline_id == sa.bindparam("b_deadline"))
    .values(
        result=sa.bindparam("b_result"),
        detail=sa.bindparam("b_detail"),
        done_at=sa.bindparam("b_at"),
    )
)


def record_result(
    tx: Statements, bulk_id: int, deadline_id: int, result: str, detail: str | None, at: datetime
) -> None:
    """An item's result, in the transaction that acted on it (or found it moved on);
    with the batch, if any."""
    values = {"b_bulk": bulk_id, "b_deadline": deadline_id, "b_result": result}
    tx.execute(_RESULT, {**values, "b_detail": detail, "b_at": at}, later=True)
