"""Every query on webhook subscriptions and their deliveries.

The relay owes each live subscription a delivery of every event it matches; the
dispatcher claims due deliveries (at most a few per receiver), sends them and records
each outcome; people list, unsubscribe and replay. Nobody else writes SQL on these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from storage import models
from storage.db import claim, unclaimed

_s = models.WEBHOOK_SUBSCRIPTIONS
_d = models.WEBHOOK_DELIVERIES
_outbox = models.OUTBOX
_LIVE = _s.c.removed_at.is_(None)


# -- subscriptions ------------------------------------------------------------------


def has_subscribers(conn: Connection) -> bool:
    return conn.execute(sa.select(_s.c.id).where(_LIVE).limit(1)).first() is not None


def live_subscriptions(conn: Connection) -> list[dict[str, Any]]:
    query = sa.select(_s).where(_LIVE).order_by(_s.c.id)
    return [dict(row) for row in conn.execute(query).mappings()]


def add_subscription(conn: Connection, values: Mapping[str, Any]) -> int:
    return int(conn.execute(_s.insert().values(**values)).inserted_primary_key[0])  # type: ignore[index]


def remove_subscription(conn: Connection, subscription_id: int, now: datetime) -> bool:
    """Stop a subscription; what it is still owed is dead-lettered. False if none."""
    done = conn.execute(
        _s.update().where(_s.c.id == subscription_id, _LIVE).values(removed_at=now)
    ).rowcount
    if done:
        conn.execute(
            _d.update()
            .where(_d.c.subscription_id == subscription_id, _d.c.status == "pending")
            .values(status="dead", last_error="subscription removed")
        )
    return bool(done)


# -- deliveries -----------------------------------------------------------------------


def owe(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """New deliveries (subscription_id, event_id, status, attempts, next_attempt_at, ...)."""
    if rows:
        conn.execute(_d.insert(), rows)


def claim_due(
    conn: Connection,
    owner: str,
    now: datetime,
    until: datetime,
    *,
    limit: int,
    per_subscription: int,
    busy: Mapping[int, int],
    sending: Sequence[int] = (),
) -> list[Any]:
    """Lease due deliveries to `owner`, oldest first, at most `per_subscription` to one
    receiver counting the `busy` ones (subscription -> requests in flight), none of those
    `sending` (in flight here); each with what sending it needs: the receiver's URL and
    secret, and the event."""
    d = _d.c
    due = sa.and_(d.status == "pending", d.next_attempt_at <= now, unclaimed(_d, now))
    if sending:
        due = sa.and_(due, d.id.not_in(sending))
    ranked = (
        sa.select(
            d.id,
            d.subscription_id,
            sa.func.row_number()
            .over(partition_by=d.subscription_id, order_by=(d.next_attempt_at, d.id))
            .label("n"),
        )
        .where(due)
        .subquery()
    )
    room: Any = per_subscription
    if busy:
        rooms = {sub: max(per_subscription - n, 0) for sub, n in busy.items()}
        room = sa.case(rooms, value=ranked.c.subscription_id, else_=per_subscription)
    query = (
        sa.select(d.id)
        .where(d.id.in_(sa.select(ranked.c.id).where(ranked.c.n <= room)))
        .order_by(d.next_attempt_at, d.id)
        .limit(limit)
    )
    ids = [row.id for row in claim(conn, query, _d, owner, until)]
    if not ids:
        return []
    return list(
        conn.execute(
            sa.select(
                d.id.label("delivery_id"),
                d.attempts,
                d.subscription_id,
                _s.c.url,
                _s.c.secret,
                _outbox,
            )
            .join(_s, _s.c.id == d.subscription_id)
            .join(_outbox, _outbox.c.id == d.event_id)
            .where(d.id.in_(ids))
            .order_by(_outbox.c.position)
        ).all()
    )


def record(conn: Connection, delivery_id: int, owner: str, values: Mapping[str, Any]) -> None:
    """An attempt's outcome; only if the delivery is still `owner`'s (a replay or an
    expired lease may have moved it on)."""
    conn.execute(
        _d.update().where(_d.c.id == delivery_id, _d.c.claimed_by == owner).values(**values)
    )


def replay(
    conn: Connection, now: datetime, delivery_id: int | None, subscription_id: int | None
) -> int:
    """Dead-lettered deliveries of live subscriptions owed again; how many."""
    query = _d.update().where(_d.c.status == "dead")
    if delivery_id is not None:
        query = query.where(_d.c.id == delivery_id)
    if subscription_id is not None:
        query = query.where(_d.c.subscription_id == subscription_id)
    query = query.where(_d.c.subscription_id.in_(sa.select(_s.c.id).where(_LIVE)))
    values = {
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "claimed_by": None,
        "claim_expires_at": None,
    }
    return int(conn.execute(query.values(**values)).rowcount)


@dataclass(frozen=True)
class DeliveryFilter:
    """Which deliveries to list: by status and subscription; a page is those with an id
    `after` the last one seen, at most `limit` of them."""

    status: str | None = None
    subscription_id: int | None = None
    after: int | None = None
    limit: int | None = None


ALL = DeliveryFilter()


def listing(conn: Connection, which: DeliveryFilter) -> list[dict[str, Any]]:
    """Deliveries in id order, with their event's id and type."""
    d = _d.c
    query = sa.select(
        _d,
        _outbox.c.event_id.label("event_uuid"),
        _outbox.c.type,
        _outbox.c.entity,
        _outbox.c.entity_id,
        _outbox.c.at.label("event_at"),
        _outbox.c.data.label("event_data"),
    ).join(_outbox, _outbox.c.id == d.event_id)
    if which.status is not None:
        query = query.where(d.status == which.status)
    if which.subscription_id is not None:
        query = query.where(d.subscription_id == which.subscription_id)
    if which.after is not None:
        query = query.where(d.id > which.after)
    if which.limit is not None:
        query = query.limit(which.limit)
    return [dict(row) for row in conn.execute(query.order_by(d.id)).mappings()]


def counts(conn: Connection) -> dict[str, int]:
    """Deliveries pending and dead-lettered, for the metrics."""
    d = _d.c
    rows = conn.execute(
        sa.select(d.status, sa.func.count())
        .where(d.status.in_(("pending", "dead")))
        .group_by(d.status)
    ).all()
    return {row[0]: row[1] for row in rows}
