"""Bulk-seed milestones under review whose auto-approval is due: for drains and benchmarks.

The rows are those the engine would have written (offer, accept, create, fund, submit):
contract totals, ledger deposit, history that replays, a pending deadline at version 3.
Written with executemany in chunks, since going through apply() for 100,000 contracts
would take minutes.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from storage.models import CONTRACTS, DEADLINES, HISTORY, LEDGER, MILESTONES


def _max_id(conn: sa.Connection, table: sa.Table) -> int:
    return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(table.c.id), 0))).scalar_one())


def seed_due_auto_approvals(
    db: sa.Engine, count: int, due_at: datetime, amount: int = 10_000, chunk: int = 5_000
) -> None:
    at = due_at
    for start in range(0, count, chunk):
        n = min(chunk, count - start)
        with db.begin() as conn:
            c0, m0, h0 = (_max_id(conn, t) for t in (CONTRACTS, MILESTONES, HISTORY))
            contracts, milestones, history, ledger, deadlines = [], [], [], [], []
            for i in range(1, n + 1):
                c, m, h = c0 + i, m0 + i, h0 + (i - 1) * 5
                contracts.append(
                    {
                        "id": c,
                        "kind": "fixed",
                        "client_id": "acme",
                        "freelancer_id": "ada",
                        "title": "seeded",
                        "currency": "USD",
                        "state": "active",
                        "version": 2,
                        "deposited": amount,
                        "released": 0,
                        "refunded": 0,
                        "held": amount,
                        "credit": 0,
                        "milestone_count": 1,
                        "active_milestone_id": m,
                        "open_proposal_id": None,
                        "open_refund_id": None,
                        "created_at": at,
                        "updated_at": at,
                    }
                )
                milestones.append(
                    {
                        "id": m,
                        "contract_id": c,
                        "position": 1,
                        "title": "seeded",
                        "description": "",
                        "due_date": None,
                        "amount": amount,
                        "escrow": amount,
                        "released_amount": 0,
                        "open_change_request_id": None,
                        "state": "in_review",
                        "version": 3,
                        "created_at": at,
                        "updated_at": at,
                    }
                )
                rows: list[tuple[str, int, str, str | None, str, int, str]] = [
                    ("contract", c, "create", None, "offer", 1, "client"),
                    ("contract", c, "accept", "offer", "active", 2, "freelancer"),
                    ("milestone", m, "create", None, "pending", 1, "client"),
                    ("milestone", m, "fund", "pending", "active", 2, "client"),
                    ("milestone", m, "submit", "active", "in_review", 3, "freelancer"),
                ]
                for offset, (entity, eid, event, frm, to, version, role) in enumerate(rows, 1):
                    history.append(
                        _history(h + offset, c, entity, eid, event, frm, to, version, role, at)
                    )
                ledger.append(
                    {
                        "contract_id": c,
                        "milestone_id": m,
                        "refund_id": None,
                        "history_id": h + 4,
                        "kind": "deposit",
                        "amount": amount,
                        "currency": "USD",
                        "at": at,
                    }
                )
                deadlines.append(
                    {
                        "contract_id": c,
                        "entity": "milestone",
                        "entity_id": m,
                        "event": "auto_approve",
                        "due_at": due_at,
                        "state_version": 3,
                        "status": "pending",
                        "created_at": at,
                        "attempts": 0,
                        "amount": amount,
                        "currency": "USD",
                    }
                )
            for table, values in (
                (CONTRACTS, contracts),
                (MILESTONES, milestones),
                (HISTORY, history),
                (LEDGER, ledger),
                (DEADLINES, deadlines),
            ):
                conn.execute(table.insert(), values)
    if db.dialect.name == "postgresql":
        with db.begin() as conn:
            for table in (CONTRACTS, MILESTONES, HISTORY):
                conn.execute(
                    sa.text(
                        f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                        f"(SELECT max(id) FROM {table.name}))"
                    )
                )


def _history(
    hid: int,
    contract: int,
    entity: str,
    entity_id: int,
    event: str,
    frm: str | None,
    to: str,
    version: int,
    role: str,
    at: datetime,
) -> dict[str, Any]:
    return {
        "id": hid,
        "contract_id": contract,
        "entity": entity,
        "entity_id": entity_id,
        "event": event,
        "from_state": frm,
        "to_state": to,
        "version": version,
        "actor_role": role,
        "actor_party": "acme" if role == "client" else "ada",
        "cause": "request",
        "caused_by": None,
        "deadline_id": None,
        "due_at": None,
        "at": at,
        "payload": {},
    }


def seed_due_reminders(db: sa.Engine, count: int, now: datetime) -> None:
    """Milestones under review whose auto-approval is 30 days ahead and whose two
    reminders (NT2) are already due: 40 and 35 days before it, so 10 and 5 days ago."""
    timer_due = now + timedelta(days=30)
    seed_due_auto_approvals(db, count, timer_due)
    with db.begin() as conn:
        timers = conn.execute(
            sa.select(DEADLINES.c.contract_id, DEADLINES.c.entity_id).where(
                DEADLINES.c.event == "auto_approve"
            )
        ).all()
        for before in (40, 35):
            conn.execute(
                DEADLINES.insert(),
                [
                    {
                        "contract_id": contract_id,
                        "entity": "milestone",
                        "entity_id": milestone_id,
                        "event": f"remind:auto_approve:P{before}D",
                        "due_at": timer_due - timedelta(days=before),
                        "state_version": 3,
                        "status": "pending",
                        "created_at": now,
                        "attempts": 0,
                    }
                    for contract_id, milestone_id in timers
                ],
            )
