"""The event feed and webhook subscriptions: how other services learn of transitions.

Every transition writes an outbox row in its own transaction (the engine). Outbox ids
are handed out at insert, so on PostgreSQL a transaction can commit id 41 after a reader
has already seen id 42: a cursor on ids would skip 41 forever. The relay therefore
gives each committed event a feed *position*, one relay at a time (it locks the single
`feed_state` row), in the order it finds them. Positions become visible in order and
all at once, so a reader that has seen position N has seen every position below N.

The relay also creates, in the same transaction, one delivery per event for each
webhook subscription whose filter matches; the dispatcher (scheduler.webhooks) sends
them. A subscription receives the events sequenced after it was created.
"""

from __future__ import annotations

import fnmatch
import re
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.engine import Engine as DBEngine

from storage import deliveries as delivery_rows
from storage import outbox
from storage.db import transaction, translated_errors
from storage.errors import NotFound, ValidationError
from workflows.outbound import check_webhook_url

MAX_PAGE = 1000
_TYPE_PATTERN = re.compile(r"^(\*|[a-z_*]+\.[a-z_*]+)$")


# -- the relay ----------------------------------------------------------------------


def sequence_events(db: DBEngine, now: datetime, limit: int = 5000) -> int:
    """Give committed events their feed positions and owed deliveries; how many it did."""
    with translated_errors(), db.connect() as conn:
        if not outbox.has_unsequenced(conn):
            return 0
    with transaction(db) as conn:
        last = outbox.lock_feed(conn)
        rows = outbox.unsequenced(conn, limit)
        if not rows:
            return 0
        outbox.set_positions(
            conn, [{"pk": row.id, "new_position": last + i} for i, row in enumerate(rows, 1)]
        )
        outbox.set_last_position(conn, last + len(rows))
        _owe_deliveries(conn, rows, now)
        return len(rows)


def _owe_deliveries(conn: Connection, events: Sequence[Any], now: datetime) -> None:
    owed = [
        {
            "subscription_id": sub["id"],
            "event_id": event.id,
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        for sub in delivery_rows.live_subscriptions(conn)
        for event in events
        if matches(sub["event_types"], event.type)
    ]
    delivery_rows.owe(conn, owed)


def matches(patterns: Sequence[str], event_type: str) -> bool:
    """An empty filter takes every event; otherwise any pattern (`milestone.*`) must match."""
    return not patterns or any(fnmatch.fnmatchcase(event_type, p) for p in patterns)


# -- reading the feed ---------------------------------------------------------------


def public_event(row: Any) -> dict[str, Any]:
    """An outbox row as other services see it: the stable `id` is the event's UUID."""
    return {
        "id": row.event_id,
        "position": row.position,
        "type": row.type,
        "entity": row.entity,
        "entity_id": row.entity_id,
        "contract_id": row.contract_id,
        "history_id": row.history_id,
        "at": row.at.isoformat(),
        "recipients": list(row.recipients),
        "data": dict(row.data),
    }


def position_of(cursor: str, after: int) -> int:
    """The feed position a `next_cursor` names (a page's last position, in decimal)."""
    if not cursor.isdigit() or after not in (0, int(cursor)):
        raise ValidationError(
            f"cursor {cursor[:20]!r} is not a feed position: pass the next_cursor of the "
            "last page (or `after`, not both)",
            code="invalid_cursor",
        )
    return int(cursor)


def read_events(
    db: DBEngine,
    now: datetime,
    *,
    after: int = 0,
    limit: int = 100,
    types: Sequence[str] = (),
) -> tuple[list[dict[str, Any]], int]:
    """Events after feed position `after`, in order, and the cursor to ask with next."""
    if after < 0:
        raise ValidationError(
            "after must be 0 or a position from a previous page", code="invalid_cursor"
        )
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationError(f"limit must be between 1 and {MAX_PAGE}", code="invalid_limit")
    check_patterns(types)
    sequence_events(db, now)
    events: list[dict[str, Any]] = []
    cursor = after
    with translated_errors(), db.connect() as conn:
        # Filtering by type in Python keeps the cursor moving past events a reader skips.
        for row in outbox.after(conn, after, limit):
            cursor = row.position
            if matches(types, row.type):
                events.append(public_event(row))
    return events, cursor


# -- subscriptions ------------------------------------------------------------------


def check_patterns(patterns: Sequence[str]) -> list[str]:
    for pattern in patterns:
        if not _TYPE_PATTERN.match(pattern):
            raise ValidationError(
                f"event type filter {pattern!r} is not ENTITY.EVENT, e.g. milestone.release, "
                "milestone.* or *",
                code="invalid_event_filter",
            )
    return list(patterns)


def subscribe(
    db: DBEngine,
    now: datetime,
    url: str,
    event_types: Sequence[str] = (),
    secret: str | None = None,
    description: str = "",
    *,
    allow_private: bool = False,
) -> dict[str, Any]:
    """A new subscription; its secret is returned here, and only here. The URL may not
    point to an internal address unless `allow_private` (workflows.outbound)."""
    values = {
        "url": check_webhook_url(url, allow_private=allow_private),
        "secret": secret or f"whsec_{secrets.token_urlsafe(32)}",
        "event_types": check_patterns(event_types),
        "description": description[:500],
        "created_at": now,
    }
    # Events already waiting are sequenced first: a new subscription gets what follows.
    sequence_events(db, now)
    with transaction(db) as conn:
        new_id = delivery_rows.add_subscription(conn, values)
    return {"id": new_id, **values, "created_at": now.isoformat(), "removed_at": None}


def subscriptions(db: DBEngine) -> list[dict[str, Any]]:
    with translated_errors(), db.connect() as conn:
        return [_public_subscription(row) for row in delivery_rows.live_subscriptions(conn)]


def _public_subscription(row: Any) -> dict[str, Any]:
    """A subscription without its secret."""
    return {
        "id": row["id"],
        "url": row["url"],
        "event_types": list(row["event_types"]),
        "description": row["description"],
        "created_at": row["created_at"].isoformat(),
    }


def unsubscribe(db: DBEngine, now: datetime, subscription_id: int) -> None:
    """Stop delivering to a subscription; deliveries still owed are dead-lettered."""
    with transaction(db) as conn:
        if not delivery_rows.remove_subscription(conn, subscription_id, now):
            raise NotFound(
                f"webhook subscription {subscription_id} does not exist",
                code="subscription_not_found",
            )


def replay(
    db: DBEngine,
    now: datetime,
    *,
    delivery_id: int | None = None,
    subscription_id: int | None = None,
) -> int:
    """Send dead-lettered deliveries again (one, or all of a subscription, or all)."""
    with transaction(db) as conn:
        count = delivery_rows.replay(
            conn, now, delivery_id=delivery_id, subscription_id=subscription_id
        )
    if delivery_id is not None and not count:
        raise NotFound(
            f"delivery {delivery_id} is not dead-lettered (or its subscription was removed)",
            code="delivery_not_dead",
        )
    return int(count)


def deliveries(
    db: DBEngine, which: delivery_rows.DeliveryFilter = delivery_rows.ALL
) -> list[dict[str, Any]]:
    """Deliveries in id order, filtered and paged by `which`."""
    with translated_errors(), db.connect() as conn:
        rows = delivery_rows.listing(conn, which)
    return [
        {
            "id": r["id"],
            "subscription_id": r["subscription_id"],
            "event_id": r["event_uuid"],
            "type": r["type"],
            "status": r["status"],
            "attempts": r["attempts"],
            "next_attempt_at": r["next_attempt_at"].isoformat(),
            "last_error": r["last_error"],
            "last_status_code": r["last_status_code"],
            "delivered_at": r["delivered_at"].isoformat() if r["delivered_at"] else None,
            "created_at": r["created_at"].isoformat(),
            # What was sent: the event's entity, time and data.
            "entity": r["entity"],
            "entity_id": r["entity_id"],
            "event_at": r["event_at"].isoformat(),
            "data": r["event_data"],
        }
        for r in rows
    ]
