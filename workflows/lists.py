"""Lists, Stripe-style: filtered pages of contracts, milestones, change requests,
proposals, refunds and pending deadlines.

Every list answers ``{"items": [...], "next_cursor": "..." | None}``. A cursor is the
sort key of the last item given, opaque to callers; the next page holds the rows after
it (keyset paging: no repeats or gaps while rows are inserted, see `storage.paging`).
A party (a client or a freelancer) sees only the rows of its own contracts; a viewer of
None (a `read` or admin token) sees all.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.engine import Engine as DBEngine

from storage import deadlines, entities
from storage.db import translated_errors
from storage.errors import NotFound, ValidationError
from workflows.actors import Actor, Role
from workflows.machines import MACHINES

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
FILTERS = entities.LIST_FILTERS
DEADLINE_FILTERS = ("contract_id", "due_before", "event")
_PARTY_COLUMN = {Role.CLIENT: "client_id", Role.FREELANCER: "freelancer_id"}


def entity_page(
    db: DBEngine,
    entity: str,
    filters: dict[str, Any],
    viewer: Actor | None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> dict[str, Any]:
    """A page of `entity` rows matching `filters` (names from :data:`FILTERS`)."""
    unknown = sorted(set(filters) - set(FILTERS[entity]))
    if unknown:
        raise _unknown_filter(unknown, FILTERS[entity])
    state = filters.get("state")
    states = [s.id for s in MACHINES[entity].states]
    if state is not None and state not in states:
        raise ValidationError(
            f"state {str(state)[:40]!r} is not a {entity} state: use one of {', '.join(states)}",
            code="unknown_state",
            details={"field": "state"},
        )
    limit = checked_limit(limit)
    after = decode_cursor(cursor, 2 if entity == "milestone" else 1)
    with translated_errors(), db.connect() as conn:
        contract_id = filters.get("contract_id")
        if entity == "milestone" and entities.read(conn, "contract", contract_id or 0) is None:
            raise NotFound(f"contract {contract_id} does not exist", code="contract_not_found")
        rows = entities.page(conn, entity, filters, party_of(viewer), after, limit + 1)
    key = (lambda r: [r["position"], r["id"]]) if entity == "milestone" else (lambda r: [r["id"]])
    return answer(rows, limit, key)


def deadline_page(
    db: DBEngine,
    *,
    contract_id: int | None = None,
    due_before: datetime | None = None,
    event: str | None = None,
    viewer: Actor | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> dict[str, Any]:
    """A page of pending deadlines, soonest first."""
    limit = checked_limit(limit)
    after = decode_cursor(cursor, 2)
    if after is not None:
        after = (_instant(after[0]), after[1])
    with translated_errors(), db.connect() as conn:
        rows = deadlines.page(
            conn,
            contract_id=contract_id,
            due_before=due_before,
            event=event,
            party=party_of(viewer),
            after=after,
            limit=limit + 1,
        )
    return answer(rows, limit, lambda r: [r["due_at"].isoformat(), r["id"]])


def party_of(viewer: Actor | None) -> tuple[str, str] | None:
    """The (column, party) a viewer is restricted to, or None to see every contract."""
    if viewer is None:
        return None
    column = _PARTY_COLUMN.get(viewer.role)
    if column is None:  # an admin acting sees everything, as a read token does
        return None
    return column, viewer.party


def checked_limit(limit: int) -> int:
    """`limit` if a page may be that long; a ValidationError saying the range otherwise."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationError(
            f"limit {limit} is out of range: give 1 to {MAX_LIMIT}", code="invalid_limit"
        )
    return limit


def _unknown_filter(unknown: list[str], known: tuple[str, ...]) -> ValidationError:
    return ValidationError(
        f"unknown filter {', '.join(unknown)}: this list takes {', '.join(known)}, "
        "limit and cursor",
        code="unknown_filter",
    )


def id_page(
    db: DBEngine,
    read: Callable[[Connection, int | None, int], list[dict[str, Any]]],
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    """A page of rows in id order: `read(conn, after_id, count)` reads up to `count` of
    them after `after_id` (None: from the first)."""
    limit = checked_limit(limit)
    after = decode_cursor(cursor, 1)
    with translated_errors(), db.connect() as conn:
        rows = read(conn, None if after is None else int(after[0]), limit + 1)
    return answer(rows, limit, lambda r: [r["id"]])


def answer(rows: list[dict[str, Any]], limit: int, key: Any) -> dict[str, Any]:
    """A list's answer from up to `limit` + 1 rows (one more means another page)."""
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "items": [{k: _jsonable(v) for k, v in row.items()} for row in rows],
        "next_cursor": _encode(key(rows[-1])) if more else None,
    }


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime | date) else value


def _encode(key: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, size: int) -> tuple[Any, ...] | None:
    """The sort key a cursor given out by `answer` holds (`size` values, the last an id)."""
    if cursor is None:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(text)
    except (binascii.Error, ValueError):
        key = None
    if not isinstance(key, list) or len(key) != size or not isinstance(key[-1], int):
        raise ValidationError(
            f"cursor {cursor[:40]!r} is not one this list gave out: pass the next_cursor "
            "of its last page, or none to start again",
            code="invalid_cursor",
        )
    return tuple(key)


def _instant(text: Any) -> datetime:
    try:
        return datetime.fromisoformat(str(text))
    except ValueError:
        raise ValidationError(
            "cursor is not one this list gave out: start again without it",
            code="invalid_cursor",
        ) from None


def currencies_of(db: DBEngine, contract_ids: set[int]) -> dict[int, str]:
    """The currency of each contract (what people read a milestone's or a refund's
    amounts in)."""
    if not contract_ids:
        return {}
    with translated_errors(), db.connect() as conn:
        rows = entities.read_many(conn, "contract", sorted(contract_ids))
    return {int(row["id"]): str(row["currency"]) for row in rows}
