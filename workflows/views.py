"""Read-only views: an entity's state, what may happen next, history, ledger, deadlines."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine as DBEngine

from storage import models
from storage.db import translated_errors
from storage.errors import NotFound
from workflows.actors import Role
from workflows.describe import describe_item
from workflows.effects.common import approved_amount
from workflows.machines import MACHINES, events_from
from workflows.policy import format_money

_history = models.HISTORY
_ledger = models.LEDGER
_deadlines = models.DEADLINES
_contracts = models.CONTRACTS
_items = models.PROPOSAL_ITEMS

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
    if entity not in models.TABLES:
        raise NotFound(
            f"unknown entity {entity!r}: use one of {', '.join(models.TABLES)}",
            code="unknown_entity",
        )
    table = models.TABLES[entity]
    with translated_errors(), db.connect() as conn:
        row = conn.execute(sa.select(table).where(table.c.id == entity_id)).mappings().first()
        if row is None:
            raise NotFound(f"{entity} {entity_id} does not exist", code=f"{entity}_not_found")
        contract_id = entity_id if entity == "contract" else row["contract_id"]
        contract = (
            conn.execute(sa.select(_contracts).where(_contracts.c.id == contract_id))
            .mappings()
            .one()
        )
        extra: dict[str, Any] = {}
        if entity == "proposal":  # FP2: what the client is asked to accept
            items = conn.execute(
                sa.select(_items)
                .where(_items.c.proposal_id == entity_id)
                .order_by(_items.c.ordinal)
            ).mappings()
            extra["items"] = [describe_item(dict(item)) for item in items]
        deadlines = (
            conn.execute(
                sa.select(_deadlines.c.id, _deadlines.c.event, _deadlines.c.due_at)
                .where(
                    _deadlines.c.entity == entity,
                    _deadlines.c.entity_id == entity_id,
                    _deadlines.c.status == "pending",
                )
                .order_by(_deadlines.c.due_at)
            )
            .mappings()
            .all()
        )
    return {
        "entity": entity,
        "id": entity_id,
        **{k: _jsonable(v) for k, v in row.items() if k != "id"},
        **extra,
        "allowed_events": allowed_events(entity, row["state"]),
        "pending_deadlines": [
            {"id": d["id"], "event": d["event"], "due_at": d["due_at"].isoformat()}
            for d in deadlines
        ],
        "parties": {"client": contract["client_id"], "freelancer": contract["freelancer_id"]},
        "contract_escrow": {
            "currency": contract["currency"],
            **{column: contract[column] for column in ESCROW_COLUMNS},
        },
    }


def history(db: DBEngine, entity: str, entity_id: int) -> list[dict[str, Any]]:
    with translated_errors(), db.connect() as conn:
        rows = (
            conn.execute(
                sa.select(_history)
                .where(_history.c.entity == entity, _history.c.entity_id == entity_id)
                .order_by(_history.c.id)
            )
            .mappings()
            .all()
        )
    if not rows:
        show(db, entity, entity_id)  # names the missing entity precisely
    return [{k: _jsonable(v) for k, v in row.items()} for row in rows]


def ledger(db: DBEngine, contract_id: int) -> list[dict[str, Any]]:
    with translated_errors(), db.connect() as conn:
        rows = (
            conn.execute(
                sa.select(_ledger)
                .where(_ledger.c.contract_id == contract_id)
                .order_by(_ledger.c.id)
            )
            .mappings()
            .all()
        )
    return [{k: _jsonable(v) for k, v in row.items()} for row in rows]


def pending_deadlines(
    db: DBEngine, *, overdue_at: datetime | None = None, contract_id: int | None = None
) -> list[dict[str, Any]]:
    query = sa.select(_deadlines).where(_deadlines.c.status == "pending")
    if overdue_at is not None:
        query = query.where(_deadlines.c.due_at <= overdue_at)
    if contract_id is not None:
        query = query.where(_deadlines.c.contract_id == contract_id)
    with translated_errors(), db.connect() as conn:
        rows = conn.execute(query.order_by(_deadlines.c.due_at, _deadlines.c.id)).mappings()
        return [{k: _jsonable(v) for k, v in row.items()} for row in rows]


def what_next(db: DBEngine, contract_id: int) -> list[dict[str, Any]]:
    """For each pending deadline of a contract: what fires, when, and the money it moves."""
    show(db, "contract", contract_id)  # names a missing contract precisely
    rows = []
    with translated_errors(), db.connect() as conn:
        currency = conn.execute(
            sa.select(_contracts.c.currency).where(_contracts.c.id == contract_id)
        ).scalar_one()
        deadlines = (
            conn.execute(
                sa.select(_deadlines)
                .where(_deadlines.c.contract_id == contract_id, _deadlines.c.status == "pending")
                .order_by(_deadlines.c.due_at)
            )
            .mappings()
            .all()
        )
        for d in deadlines:
            table = models.TABLES[d["entity"]]
            entity = (
                conn.execute(sa.select(table).where(table.c.id == d["entity_id"])).mappings().one()
            )
            money = _money_moved(d["event"], entity)
            moves = f", {format_money(money[1], currency)} {money[0]}" if money else ""
            kept = _kept_for_client(d["event"], entity)
            if kept:
                moves += f", {format_money(kept, currency)} stays in escrow for the client"
            rows.append(
                {
                    "deadline_id": d["id"],
                    "entity": d["entity"],
                    "entity_id": d["entity_id"],
                    "event": d["event"],
                    "due_at": d["due_at"].isoformat(),
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


def _money_moved(event: str, entity: Any) -> tuple[str, int] | None:
    if event == "auto_approve":  # MS10: as an approval without an amount
        return ("released to the freelancer", approved_amount(entity))
    if event == "refund_by_default":
        return ("refunded to the client", entity["amount"])
    return None


def _kept_for_client(event: str, entity: Any) -> int:
    """MS10, MS9: what an auto-approval leaves in escrow for the client."""
    if event == "auto_approve":
        return int(entity["escrow"]) - approved_amount(entity)
    return 0
