"""Keyset pages: the rows after the last one a reader saw, in a stable order that an
index serves. Unlike OFFSET, a page never repeats or skips a row when rows are inserted
between two reads (new rows sort after those already seen, as ids only grow)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection


def after_key(columns: Sequence[Any], key: Sequence[Any]) -> sa.ColumnElement[bool]:
    """`(c1, c2, ...) > (k1, k2, ...)`, spelt out so that every backend uses the index."""
    clause: sa.ColumnElement[bool] = columns[-1] > key[-1]
    for column, value in zip(reversed(columns[:-1]), reversed(key[:-1]), strict=True):
        clause = sa.or_(column > value, sa.and_(column == value, clause))
    return clause


def page(
    conn: Connection,
    query: sa.Select[Any],
    order: Sequence[Any],
    after: Sequence[Any] | None,
    limit: int,
) -> list[dict[str, Any]]:
    """At most `limit` rows of `query` after the key `after`, in `order`."""
    if after is not None:
        query = query.where(after_key(order, after))
    rows = conn.execute(query.order_by(*order).limit(limit)).mappings()
    return [dict(row) for row in rows]
