"""Read-only views: an entity's state, what may happen next, history, ledger, deadlines."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.engine import Engine as DBEngine

from storage import deadlines, entities
from storage import history as storage_history
from storage import ledger as storage_ledger
from storage.db import translated_errors
from storage.errors import NotFound
from workflows import lists, reminders
from workflows.actors import Role
from workflows.describe import describe_item
from workflows.lifecycle import Timer
from workflows.machines import MACHINES, events_from, timer_of
from workflows.policy import approved_amount, format_money, moved_by_timer
from workflows.reminders import iso_duration

ESCROW_COLUMNS = ("deposited", "released", "refunded", "held", "credit")


def _jsonable(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def allowed_events(entity: str, state: str) -> dict[str, list[str]]:
    """The events each role may fire from `state` (guards still apply when fired). The
    engine's own moves (system) are nobody's to fire, so they are not listed (PA1)."""
    machine = MACHINES[entity]
    events = events_from(machine, state)
    return {
        role.value: [e for e in events if role in machine.permissions[e]]
        for role in Role
        if role is not Role.SYSTEM and any(role in machine.permissions[e] for e in events)
    }


def show(db: DBEngine, entity: str, entity_id: int) -> dict[str, Any]:
    if entity not in entities.TABLES:
        raise NotFound(
            f"unknown entity {entity!r}: use one of {', '.join(entities.TABLES)}",
            code="unknown_entity",
        )
    with translated_errors(), db.connect() as conn:
        return show_in(conn, entity, entity_id)


def show_in(conn: Connection, entity: str, entity_id: int) -> dict[str, Any]:
    """`show`, read on `conn` (a page reading several things in one snapshot)."""
    row = entities.read(conn, entity, entity_id)
    if row is None:
        raise NotFound(f"{entity} {entity_id} does not exist", code=f"{entity}_not_found")
    contract_id = entity_id if entity == "contract" else row["contract_id"]
    contract = entities.read(conn, "contract", contract_id)
    assert contract is not None  # a row's contract is never deleted
    extra: dict[str, Any] = {}
    if entity == "proposal":  # FP2: what the client is asked to accept
        items = entities.proposal_items(conn, entity_id)
        extra["items"] = [describe_item(item) for item in items]
    pending = deadlines.pending_of_entity(conn, entity, entity_id)
    return {
        "entity": entity,
        "id": entity_id,
        **{k: _jsonable(v) for k, v in row.items() if k != "id"},
        **extra,
        "allowed_events": allowed_events(entity, row["state"]),
        "pending_deadlines": [
            {"id": d["id"], "event": d["event"], "due_at": d["due_at"].isoformat()} for d in pending
        ],
        "terms_id": contract["terms_id"],  # TM1: its contract's, for every entity
        "parties": {"client": contract["client_id"], "freelancer": contract["freelancer_id"]},
        "contract_escrow": {
            "currency": contract["currency"],
            **{column: contract[column] for column in ESCROW_COLUMNS},
        },
    }


def history(db: DBEngine, entity: str, entity_id: int) -> list[dict[str, Any]]:
    with translated_errors(), db.connect() as conn:
        rows = storage_history.of_entity(conn, entity, entity_id)
    if not rows:
        show(db, entity, entity_id)  # names the missing entity precisely
    return [{k: _jsonable(v) for k, v in row.items()} for row in rows]


def history_page(
    db: DBEngine, entity: str, entity_id: int, limit: int, cursor: str | None
) -> dict[str, Any]:
    """A page of an entity's history, oldest first (`items`, `next_cursor`)."""

    def read(conn: Connection, after_id: int | None, count: int) -> list[dict[str, Any]]:
        return storage_history.of_entity(conn, entity, entity_id, after_id=after_id, limit=count)

    page = lists.id_page(db, read, limit, cursor)
    if not page["items"] and cursor is None:
        show(db, entity, entity_id)  # names the missing entity precisely
    return page


def ledger_page(db: DBEngine, contract_id: int, limit: int, cursor: str | None) -> dict[str, Any]:
    """A page of a contract's ledger, in the order written (`items`, `next_cursor`)."""

    def read(conn: Connection, after_id: int | None, count: int) -> list[dict[str, Any]]:
        return storage_ledger.of_contract(conn, contract_id, after_id=after_id, limit=count)

    page = lists.id_page(db, read, limit, cursor)
    if not page["items"] and cursor is None:
        show(db, "contract", contract_id)  # a contract without entries does not exist
    return page


def pending_deadlines(
    db: DBEngine, *, overdue_at: datetime | None = None, contract_id: int | None = None
) -> list[dict[str, Any]]:
    with translated_errors(), db.connect() as conn:
        rows = deadlines.pending(conn, overdue_at=overdue_at, contract_id=contract_id)
    return [{k: _jsonable(v) for k, v in row.items()} for row in rows]


def what_next(db: DBEngine, contract_id: int) -> list[dict[str, Any]]:
    """For each pending deadline of a contract: what fires, when, and the money it moves."""
    with translated_errors(), db.connect() as conn:
        return what_next_in(conn, contract_id)


def what_next_in(conn: Connection, contract_id: int) -> list[dict[str, Any]]:
    """`what_next`, read on `conn`."""
    contract = show_in(conn, "contract", contract_id)  # names a missing contract precisely
    currency = contract["currency"]
    rows = []
    for d in deadlines.pending(conn, contract_id=contract_id):
        entity = entities.read(conn, d["entity"], d["entity_id"])
        reminder = reminders.parse(d["event"])
        if reminder is not None:  # NT2: who is told, of what
            rows.append(_reminder_next(d, reminder, contract))
            continue
        money = _money_moved(d["event"], entity)
        moves = f", {format_money(money[1], currency)} {money[0]}" if money else ""
        kept = _kept_for_client(d["event"], entity)
        if kept:
            moves += f", {format_money(kept, currency)} stays in escrow for the client"
        rows.append(
            {
                **_deadline_of(d),
                "money": {
                    "to": money[0],
                    "amount": money[1],
                    "currency": currency,
                    "stays_for_client": kept,
                }
                if money
                else None,
                "summary": f"{d['due_at'].isoformat()}: {d['entity']} {d['entity_id']} "
                f"{d['event']}{moves}",
            }
        )
    return rows


def _deadline_of(d: dict[str, Any]) -> dict[str, Any]:
    """What `next` says of any pending deadline: which, on what, when, paused or not."""
    return {
        "deadline_id": d["id"],
        "entity": d["entity"],
        "entity_id": d["entity_id"],
        "event": d["event"],
        "due_at": d["due_at"].isoformat(),
        "paused": bool(d["paused"]),
        # DL1: what a paused one will have left when it is resumed
        "left": iso_duration(timedelta(milliseconds=d["paused_left_ms"] or 0))
        if d["paused"]
        else None,
        # DL3: retries stopped; it waits for an admin's retry
        "failed": d.get("failed_at") is not None,
    }


def _reminder_next(
    d: dict[str, Any], reminder: tuple[str, timedelta], contract: dict[str, Any]
) -> dict[str, Any]:
    event, before = reminder
    timer = next(t for t in _timers(d["entity"]) if t.event == event)
    role = timer.reminds.value if timer.reminds else "client"
    party = contract["parties"][role]
    return {
        **_deadline_of(d),
        "money": None,
        "reminds": {"role": role, "id": party, "of": event, "before": iso_duration(before)},
        "summary": f"{d['due_at'].isoformat()}: reminder to {role} {party}: {d['entity']} "
        f"{d['entity_id']} {event} in {iso_duration(before)}",
    }


def _timers(entity: str) -> list[Timer]:
    machine = MACHINES[entity]
    return [t for t in (timer_of(machine, s.id) for s in machine.states) if t is not None]


def _money_moved(event: str, entity: Any) -> tuple[str, int] | None:
    amount = moved_by_timer(event, entity)
    if amount is None:
        return None
    return (
        "released to the freelancer" if event == "auto_approve" else "refunded to the client",
        amount,
    )


def _kept_for_client(event: str, entity: Any) -> int:
    """MS10, MS9: what an auto-approval leaves in escrow for the client."""
    if event == "auto_approve":
        return int(entity["escrow"]) - approved_amount(entity)
    return 0
