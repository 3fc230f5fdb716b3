"""The terms migration plans (TM2): `terms_plans` and the contracts and deadlines each
moves. Every query on those three tables is here. A plan's rows are written once, when
it is made; applying it only marks contracts applied and the plan's status."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from storage import models
from storage.statements import Statements

_p = models.TERMS_PLANS
_pc = models.TERMS_PLAN_CONTRACTS
_pd = models.TERMS_PLAN_DEADLINES


def create(
    conn: Connection,
    plan: dict[str, Any],
    contracts: list[dict[str, Any]],
    deadlines: list[dict[str, Any]],
) -> int:
    """Store a plan with its contracts and deadlines; its id."""
    inserted = conn.execute(_p.insert().values(plan)).inserted_primary_key
    assert inserted is not None
    plan_id = int(inserted[0])
    if contracts:
        conn.execute(_pc.insert(), [{**row, "plan_id": plan_id} for row in contracts])
    if deadlines:
        conn.execute(_pd.insert(), [{**row, "plan_id": plan_id} for row in deadlines])
    return plan_id


def load(conn: Connection, plan_id: int) -> dict[str, Any] | None:
    row = conn.execute(sa.select(_p).where(_p.c.id == plan_id)).mappings().first()
    return None if row is None else dict(row)


def listing(conn: Connection, limit: int) -> list[dict[str, Any]]:
    """The newest plans first."""
    rows = conn.execute(sa.select(_p).order_by(_p.c.id.desc()).limit(limit)).mappings()
    return [dict(row) for row in rows]


def update(conn: Connection, plan_id: int, values: dict[str, Any]) -> None:
    conn.execute(_p.update().where(_p.c.id == plan_id).values(values))


def contracts(conn: Connection, plan_id: int, *, unapplied: bool) -> list[dict[str, Any]]:
    """The plan's contracts, by id; `unapplied`: only those not moved yet."""
    query = sa.select(_pc).where(_pc.c.plan_id == plan_id)
    if unapplied:
        query = query.where(_pc.c.applied_at.is_(None))
    return [dict(row) for row in conn.execute(query.order_by(_pc.c.contract_id)).mappings()]


def count_applied(conn: Connection, plan_ids: list[int]) -> dict[int, int]:
    """How many contracts each plan has moved so far, by plan id (0s left out)."""
    query = (
        sa.select(_pc.c.plan_id, sa.func.count())
        .where(_pc.c.plan_id.in_(plan_ids), _pc.c.applied_at.is_not(None))
        .group_by(_pc.c.plan_id)
    )
    return {plan_id: count for plan_id, count in conn.execute(query)}


def deadlines(
    conn: Connection, plan_id: int, *, after: int | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """The plan's deadlines, by id: a page after deadline `after`, or all."""
    query = sa.select(_pd).where(_pd.c.plan_id == plan_id)
    if after is not None:
        query = query.where(_pd.c.deadline_id > after)
    query = query.order_by(_pd.c.deadline_id)
    if limit is not None:
        query = query.limit(limit)
    return [dict(row) for row in conn.execute(query).mappings()]


_MARK_APPLIED = (
    _pc.update()
    .where(_pc.c.plan_id == sa.bindparam("p_plan"), _pc.c.contract_id == sa.bindparam("p_contract"))
    .values(applied_at=sa.bindparam("p_at"))
)


def mark_applied(tx: Statements, plan_id: int, contract_id: int, now: datetime) -> None:
    """The contract's move is committed with this transaction (TM2: resumable)."""
    tx.execute(_MARK_APPLIED, {"p_plan": plan_id, "p_contract": contract_id, "p_at": now})
