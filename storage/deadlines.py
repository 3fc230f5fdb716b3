"""Every query on the deadlines table (procrastinate's manager style: one owner).

A deadline is a timer's moment as data: scheduled when a timed state is entered, fired
by a worker's sweep, closed as fired, stale or cancelled. The engine, the sweeper, the
views, the worker's status and the metrics all come here; nobody else writes SQL on
this table. Hot-path statements are built once and run through `storage.statements`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from storage import models, paging
from storage.db import claim, id_in, unclaimed
from storage.dialect import adapter_of
from storage.statements import Statements

_d = models.DEADLINES
_contracts = models.CONTRACTS

_PENDING_OF_ENTITY = sa.and_(
    _d.c.entity == sa.bindparam("d_entity"),
    _d.c.entity_id == sa.bindparam("d_entity_id"),
    _d.c.status == "pending",
    _d.c.id != sa.bindparam("d_firing"),
)
_LOAD = sa.select(_d).where(_d.c.id == sa.bindparam("pk"))
_WITH_CONTRACT = (
    sa.select(_contracts, *(c.label(f"deadline__{c.name}") for c in _d.c))
    .join_from(_d, _contracts, _contracts.c.id == _d.c.contract_id)
    .where(_d.c.id == sa.bindparam("pk"))
)
_CANCEL = (
    _d.update()
    .where(_PENDING_OF_ENTITY)
    .values(status="cancelled", closed_at=sa.bindparam("d_now"))
)
_CARRY = (
    _d.update()
    .where(_PENDING_OF_ENTITY)
    .values(
        state_version=sa.bindparam("d_version"),
        # Reminders move nothing (their amount stays NULL); the timer's follows its entity.
        amount=sa.case((_d.c.amount.is_(None), None), else_=sa.bindparam("d_amount")),
    )
)
_CANCEL_PREFIXED = (
    _d.update()
    .where(
        _d.c.entity == sa.bindparam("d_entity"),
        _d.c.entity_id == sa.bindparam("d_entity_id"),
        _d.c.status == "pending",
        sa.func.substr(_d.c.event, 1, sa.bindparam("d_length", type_=sa.Integer))
        == sa.bindparam("d_prefix", type_=sa.String),
    )
    .values(status="cancelled", closed_at=sa.bindparam("d_now"))
)


def contract_id_of() -> sa.ScalarSelect[Any]:
    """The contract of deadline `:pk`, as a subquery (to lock the contract first)."""
    return sa.select(_d.c.contract_id).where(_d.c.id == sa.bindparam("pk")).scalar_subquery()


# -- the engine's hot path --------------------------------------------------------


def load(tx: Statements, deadline_id: int) -> dict[str, Any] | None:
    return tx.fetch_one(_LOAD, {"pk": deadline_id})


def load_with_contract(
    tx: Statements, deadline_id: int
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """A deadline and its contract in one statement (SQLite: the write lock is held)."""
    row = tx.fetch_row(_WITH_CONTRACT, {"pk": deadline_id})
    if row is None:
        return None
    cut = len(_contracts.c)
    contract = dict(zip(_contracts.c.keys(), row[:cut], strict=True))
    return contract, dict(zip(_d.c.keys(), row[cut:], strict=True))


def schedule(tx: Statements, rows: list[dict[str, Any]], now: datetime) -> None:
    """Pending deadlines (a timer and its reminders, in one statement): each row names
    its contract_id, entity, entity_id, event, due_at, the state_version it may fire on,
    and what it moves (amount, currency; None for a reminder)."""
    tx.append_many(_d, [{**row, "status": "pending", "created_at": now} for row in rows])


def _of_entity(entity: str, entity_id: int, firing: int | None) -> dict[str, Any]:
    return {"d_entity": entity, "d_entity_id": entity_id, "d_firing": firing or 0}


def cancel_pending(
    tx: Statements, entity: str, entity_id: int, firing: int | None, now: datetime
) -> None:
    """Cancel the entity's pending deadlines (but the one firing now)."""
    tx.execute(_CANCEL, {**_of_entity(entity, entity_id, firing), "d_now": now})


def cancel_reminders(
    tx: Statements, entity: str, entity_id: int, prefix: str, now: datetime
) -> None:
    """Cancel the entity's pending deadlines whose event starts with `prefix` (NT2: a
    paused or extended deadline's reminders)."""
    values = {"d_entity": entity, "d_entity_id": entity_id, "d_now": now}
    tx.execute(_CANCEL_PREFIXED, {**values, "d_prefix": prefix, "d_length": len(prefix)})


def carry_pending(
    tx: Statements,
    entity: str,
    entity_id: int,
    firing: int | None,
    version: int,
    amount: int | None,
) -> None:
    """Keep the entity's running deadline: it fires on the entity's new version and
    moves `amount` (e.g. after a deposit, CR3)."""
    values = {"d_version": version, "d_amount": amount}
    tx.execute(_CARRY, {**_of_entity(entity, entity_id, firing), **values})


def close(
    tx: Statements, deadline_id: int, status: str, now: datetime, history_id: int | None
) -> None:
    """Mark a deadline fired or stale (with the batch, if the caller has one)."""
    closed = {"status": status, "closed_at": now, "history_id": history_id}
    tx.update(_d, deadline_id, {**closed, "claimed_by": None, "claim_expires_at": None}, later=True)


def adjust(tx: Statements, deadline_id: int, changes: dict[str, Any]) -> None:
    """An admin's pause, resume or extension (with the batch, if any: a bulk action's
    chunk writes its deadlines together)."""
    tx.update(_d, deadline_id, changes, later=True)


# -- the sweep ----------------------------------------------------------------------


def _due(now: datetime) -> sa.ColumnElement[bool]:
    c = _d.c
    return sa.and_(
        c.status == "pending",
        c.paused.is_(False),
        c.failed_at.is_(None),  # DL3: until an admin retries it
        c.due_at <= now,
        sa.or_(c.next_attempt_at.is_(None), c.next_attempt_at <= now),
        unclaimed(_d, now),
    )


def claim_due(
    conn: Connection, owner: str, now: datetime, until: datetime, limit: int
) -> list[Any]:
    """Lease up to `limit` due deadlines to `owner`, oldest first. `now` and `until` are
    the deployment's clock (DL2: the database server's), never a worker's own."""
    c = _d.c
    query = (
        sa.select(c.id, c.contract_id, c.due_at, c.entity, c.entity_id, c.event, c.blocked_since)
        .where(_due(now))
        .order_by(c.due_at, c.id)
        .limit(limit)
    )
    # A deadline fires only if still pending, re-checked under its contract's lock.
    return claim(conn, query, _d, owner, until, rechecked=True)


def record_failure(
    tx: Statements,
    deadline_id: int,
    message: str,
    now: datetime,
    retry_at: Callable[[int], datetime],
    gives_up: Callable[[int], bool],
) -> bool:
    """A firing raised: count the attempt, keep the error, retry at `retry_at(attempts)`,
    or, if `gives_up(attempts)`, mark it failed (DL3). Whether it failed for good."""
    attempts = int(tx.scalar(sa.select(_d.c.attempts).where(_d.c.id == deadline_id))) + 1
    failed = gives_up(attempts)
    tx.update(
        _d,
        deadline_id,
        {
            "attempts": attempts,
            "last_error": message[:2000],
            "next_attempt_at": None if failed else retry_at(attempts),
            "failed_at": now if failed else None,
            "claimed_by": None,
            "claim_expires_at": None,
        },
    )
    return failed


_BLOCK = (
    _d.update()
    .where(_d.c.id == sa.bindparam("d_id"))
    .values(
        blocked_since=sa.func.coalesce(_d.c.blocked_since, sa.bindparam("d_now")),
        next_attempt_at=sa.bindparam("d_retry"),
        claimed_by=None,
        claim_expires_at=None,
    )
)


def unblocked(tx: Statements, deadline_id: int) -> None:
    """A sweep holds its contract now: it is no longer waiting on a lock."""
    tx.update(_d, deadline_id, {"blocked_since": None, "next_attempt_at": None})


def record_blocked(tx: Statements, deadline_id: int, now: datetime, retry_at: datetime) -> None:
    """Its contract is locked by another connection: the sweep went on without it; it is
    claimable again from `retry_at` (no attempt counted: nothing failed)."""
    tx.execute(_BLOCK, {"d_id": deadline_id, "d_now": now, "d_retry": retry_at})


def next_due(conn: Connection) -> datetime | None:
    """When the next pending deadline (or retry) falls due, if any.

    Each half walks its partial index to the first row: cheap with a million pending.
    """
    c = _d.c
    pending = sa.and_(c.status == "pending", c.paused.is_(False))
    due = conn.execute(
        sa.select(c.due_at).where(pending, c.next_attempt_at.is_(None)).order_by(c.due_at).limit(1)
    ).scalar()
    retry = conn.execute(
        sa.select(c.next_attempt_at)
        .where(pending, c.next_attempt_at.is_not(None))
        .order_by(c.next_attempt_at)
        .limit(1)
    ).scalar()
    found = [t for t in (due, retry) if t is not None]
    return min(found) if found else None


# -- reading, for people ---------------------------------------------------------------


def pending_of_entity(conn: Connection, entity: str, entity_id: int) -> list[dict[str, Any]]:
    c = _d.c
    query = (
        sa.select(c.id, c.event, c.due_at)
        .where(c.entity == entity, c.entity_id == entity_id, c.status == "pending")
        .order_by(c.due_at)
    )
    return [dict(row) for row in conn.execute(query).mappings()]


def pending(
    conn: Connection, *, overdue_at: datetime | None = None, contract_id: int | None = None
) -> list[dict[str, Any]]:
    """Pending deadlines, soonest first: all, overdue at a moment, or of one contract."""
    query = sa.select(_d).where(_d.c.status == "pending")
    if overdue_at is not None:
        query = query.where(_d.c.due_at <= overdue_at)
    if contract_id is not None:
        query = query.where(_d.c.contract_id == contract_id)
    rows = conn.execute(query.order_by(_d.c.due_at, _d.c.id)).mappings()
    return [dict(row) for row in rows]


def page(
    conn: Connection,
    *,
    contract_id: int | None,
    due_before: datetime | None,
    event: str | None,
    party: tuple[str, str] | None,
    after: tuple[Any, ...] | None,
    limit: int,
) -> list[dict[str, Any]]:
    """A page of pending deadlines, soonest first (ix_deadlines_due_pending); `party`
    (`("client_id", "acme")`) keeps only those of that party's contracts."""
    c = _d.c
    query = sa.select(_d).where(c.status == "pending")
    if contract_id is not None:
        query = query.where(c.contract_id == contract_id)
    if due_before is not None:
        query = query.where(c.due_at < due_before)
    if event is not None:
        query = query.where(c.event == event)
    if party is not None:
        column, who = party
        query = query.where(
            c.contract_id.in_(sa.select(_contracts.c.id).where(_contracts.c[column] == who))
        )
    return paging.page(conn, query, (c.due_at, c.id), after, limit)


# What each timed event moves (MS10, RF2): an auto-approval releases what the milestone
# holds up to its amount; a default refund returns the refund's amount to the client.
_MOVES_MONEY = ("auto_approve", "refund_by_default")


def money_due(
    conn: Connection, until: datetime, parties: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Pending deadlines that move money and fall due before `until`, summed by UTC day,
    currency, event and whether paused: one range of ix_deadlines_due_pending, no join
    (each deadline keeps what it moves). `parties`: only contracts of that `client_id`
    and/or `freelancer_id`."""
    c = _d.c
    adapter = adapter_of(conn)
    day = adapter.utc_day(c.due_at)
    pending = adapter.index_condition(c.status, "pending")  # ix_deadlines_due_pending
    query = (
        sa.select(
            day.label("day"),
            c.currency,
            c.event,
            c.paused,
            sa.func.count().label("count"),
            sa.func.coalesce(sa.func.sum(c.amount), 0).label("amount"),
        )
        .where(pending, c.due_at < until, c.event.in_(_MOVES_MONEY))
        .group_by(day, c.currency, c.event, c.paused)
        .order_by(day, c.currency)
    )
    for party, value in (parties or {}).items():
        theirs = sa.select(_contracts.c.id).where(_contracts.c[party] == value)
        query = query.where(c.contract_id.in_(theirs))
    return [dict(row) for row in conn.execute(query).mappings()]


def status(conn: Connection, now: datetime) -> dict[str, Any]:
    """What `escrowflow status` shows: pending, overdue, and the failing ones."""
    c = _d.c
    count = sa.select(sa.func.count())
    columns = (c.id, c.entity, c.entity_id, c.event, c.attempts, c.last_error, c.next_attempt_at)
    failing = conn.execute(
        sa.select(*columns)
        .where(c.status == "pending", c.attempts > 0, c.failed_at.is_(None))
        .order_by(c.id)
    ).mappings()
    failed = conn.execute(
        sa.select(*columns, c.failed_at)
        .where(c.status == "pending", c.failed_at.is_not(None))
        .order_by(c.id)
    ).mappings()
    blocked = conn.execute(
        sa.select(c.id, c.contract_id, c.entity, c.entity_id, c.event, c.blocked_since)
        .where(
            c.status == "pending",
            c.blocked_since.is_not(None),
            c.paused.is_(False),
            c.due_at <= now,
        )
        .order_by(c.id)
    ).mappings()
    return {
        "failing": [dict(row) for row in failing],
        "failed": [dict(row) for row in failed],
        "waiting_on_lock": [dict(row) for row in blocked],
        "pending": conn.execute(count.where(c.status == "pending")).scalar_one(),
        "overdue": conn.execute(count.where(c.status == "pending", c.due_at <= now)).scalar_one(),
    }


def gauges(conn: Connection, now: datetime) -> dict[str, Any]:
    """For the metrics: pending, overdue (live), the oldest overdue due time, and how
    many are failing (retrying) and failed (DL3)."""
    c = _d.c
    pending = c.status == "pending"
    live = sa.and_(pending, c.paused.is_(False), c.failed_at.is_(None))
    count = sa.func.count()
    return {
        "pending": conn.execute(sa.select(count).where(pending)).scalar_one(),
        "overdue": conn.execute(sa.select(count).where(live, c.due_at <= now)).scalar_one(),
        "oldest_due": conn.execute(
            sa.select(sa.func.min(c.due_at)).where(live, c.due_at <= now)
        ).scalar(),
        "failing": conn.execute(
            sa.select(count).where(pending, c.attempts > 0, c.failed_at.is_(None))
        ).scalar_one(),
        "failed": conn.execute(
            sa.select(count).where(pending, c.failed_at.is_not(None))
        ).scalar_one(),
    }


def ids_of_contract(conn: Connection, contract_id: int) -> list[int]:
    """Every deadline of a contract (an admin's pauses are recorded against them)."""
    query = sa.select(_d.c.id).where(_d.c.contract_id == contract_id).order_by(_d.c.id)
    return list(conn.execute(query).scalars())


def board(conn: Connection, now: datetime, limit: int = 200) -> dict[str, list[dict[str, Any]]]:
    """The console's deadlines page: overdue, failing and paused ones (oldest first)."""
    c = _d.c
    pending = sa.select(_d).where(c.status == "pending").order_by(c.due_at, c.id).limit(limit)
    return {
        name: [dict(row) for row in conn.execute(pending.where(condition)).mappings()]
        for name, condition in (
            ("overdue", sa.and_(c.due_at <= now, c.paused.is_(False))),
            ("failing", sa.and_(c.attempts > 0, c.failed_at.is_(None))),
            ("failed", c.failed_at.is_not(None)),  # DL3
            (
                "waiting_on_lock",
                sa.and_(c.blocked_since.is_not(None), c.paused.is_(False), c.due_at <= now),
            ),
            ("paused", c.paused.is_(True)),
        )
    }


def frozen(conn: Connection) -> list[dict[str, Any]]:
    """The money paused deadlines hold back (DL1, DL4), per currency and who paused them:
    how many, how much (minor units), since when (the earliest pause)."""
    c = _d.c
    query = (
        sa.select(
            c.currency,
            c.paused_by,
            sa.func.count().label("count"),
            sa.func.coalesce(sa.func.sum(c.amount), 0).label("amount"),
            sa.func.min(c.paused_at).label("since"),
        )
        .where(c.status == "pending", c.paused.is_(True), c.event.in_(_MOVES_MONEY))
        .group_by(c.currency, c.paused_by)
        .order_by(c.currency, c.paused_by)
    )
    return [dict(row) for row in conn.execute(query).mappings()]


def batch_of(tx: Statements, deadline_ids: Sequence[int]) -> list[dict[str, Any]]:
    """The deadlines of `deadline_ids` (a sweep's batch: one prepared statement)."""
    return tx.fetch_by_ids(_d, deadline_ids)


def read_many(conn: Connection, deadline_ids: list[int]) -> list[dict[str, Any]]:
    query = sa.select(_d).where(id_in(conn, _d.c.id, deadline_ids))
    return [dict(row) for row in conn.execute(query).mappings()]


# -- terms migrations (TM2) --------------------------------------------------------------

_PLAN_COLUMNS = (
    _d.c.id,
    _d.c.contract_id,
    _d.c.entity,
    _d.c.entity_id,
    _d.c.event,
    _d.c.due_at,
    _d.c.state_version,
    _d.c.paused,
    _d.c.paused_left_ms,
    _d.c.amount,
    _d.c.currency,
)
_CHUNK = 5_000  # ids per statement: under every backend's parameter limit


def pending_of_contracts(conn: Connection, contract_ids: list[int]) -> list[dict[str, Any]]:
    """The pending deadlines (reminders too) of many contracts, by contract then id."""
    found: list[dict[str, Any]] = []
    for start in range(0, len(contract_ids), _CHUNK):
        chunk = contract_ids[start : start + _CHUNK]
        query = sa.select(*_PLAN_COLUMNS).where(
            id_in(conn, _d.c.contract_id, chunk), _d.c.status == "pending"
        )
        rows = conn.execute(query.order_by(_d.c.contract_id, _d.c.id)).mappings()
        found.extend(dict(row) for row in rows)
    return found


_PENDING_OF_CONTRACT = (
    sa.select(*_PLAN_COLUMNS)
    .where(_d.c.contract_id == sa.bindparam("d_contract"), _d.c.status == "pending")
    .order_by(_d.c.id)
)


def pending_of_contract(tx: Statements, contract_id: int) -> list[dict[str, Any]]:
    """A locked contract's pending deadlines (reminders too), in its transaction."""
    return tx.fetch_many(_PENDING_OF_CONTRACT, {"d_contract": contract_id})


# -- bulk actions (DL4) ----------------------------------------------------------------

_SELECTED = (*_PLAN_COLUMNS, _d.c.failed_at)


def selected(conn: Connection, criteria: dict[str, Any]) -> list[dict[str, Any]]:
    """The pending deadlines a bulk action selects, by id. `criteria`: `events` (exact
    names), `reminders` (True: reminders too; their names start with `reminder_prefix`),
    `due_from`/`due_to`, `client_id`/`freelancer_id` (through the contract), `ids`
    (contract ids), `currency`, `amount_min`/`amount_max`, `states` (pending, paused,
    failed)."""
    c = _d.c
    query = sa.select(*_SELECTED).where(c.status == "pending")
    events = criteria.get("events")
    prefix = criteria["reminder_prefix"]
    if events:
        chosen: sa.ColumnElement[bool] = c.event.in_(events)
        if criteria.get("reminders"):
            chosen = sa.or_(chosen, *(c.event.like(f"{prefix}{e}:%") for e in events))
        query = query.where(chosen)
    elif not criteria.get("reminders"):
        query = query.where(c.event.not_like(f"{prefix}%"))
    if criteria.get("due_from") is not None:
        query = query.where(c.due_at >= criteria["due_from"])
    if criteria.get("due_to") is not None:
        query = query.where(c.due_at < criteria["due_to"])
    for party in ("client_id", "freelancer_id"):
        if criteria.get(party) is not None:
            theirs = sa.select(_contracts.c.id).where(_contracts.c[party] == criteria[party])
            query = query.where(c.contract_id.in_(theirs))
    if criteria.get("ids"):
        query = query.where(id_in(conn, c.contract_id, criteria["ids"]))
    if criteria.get("currency") is not None:
        query = query.where(c.currency == criteria["currency"])
    if criteria.get("amount_min") is not None:
        query = query.where(c.amount >= criteria["amount_min"])
    if criteria.get("amount_max") is not None:
        query = query.where(c.amount <= criteria["amount_max"])
    states = criteria.get("states")
    if states:
        conditions = {
            "pending": sa.and_(c.paused.is_(False), c.failed_at.is_(None)),
            "paused": c.paused.is_(True),
            "failed": c.failed_at.is_not(None),
        }
        query = query.where(sa.or_(*(conditions[s] for s in states)))
    return [dict(row) for row in conn.execute(query.order_by(c.id)).mappings()]
