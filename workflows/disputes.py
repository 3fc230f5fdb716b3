"""The dispute desk's queue (RF3): every disputed refund with what a person needs to
decide it — both parties, the amount as money, the client's reason and the freelancer's,
how long it has waited, where the contract's money sits, and a decision waiting for a
second admin (PA4), oldest dispute first."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine as DBEngine

from storage import approvals, entities, history
from storage.db import translated_errors
from storage.errors import NotFound
from workflows.policy import ISO_4217, format_money

QUEUE_LIMIT = 200
"""Disputes shown at once, oldest first."""


def queue(db: DBEngine, now: datetime) -> list[dict[str, Any]]:
    """The disputed refunds, oldest dispute first, each with its context."""
    with translated_errors(), db.connect() as conn:
        refunds = entities.in_state(conn, "refund", "disputed", QUEUE_LIMIT)
        ids = [r["id"] for r in refunds]
        contracts = {
            c["id"]: c
            for c in entities.read_many(conn, "contract", [r["contract_id"] for r in refunds])
        }
        disputed = {
            h["entity_id"]: h
            for h in history.of_entities(conn, {"refund": ids})
            if h["event"] == "dispute"
        }
        waiting = {a["entity_id"]: a for a in approvals.pending_of(conn, "refund", ids)}
    rows = []
    for refund in refunds:
        contract = contracts[refund["contract_id"]]
        currency = contract["currency"]
        dispute = disputed.get(refund["id"])
        since = dispute["at"] if dispute else refund["updated_at"]
        rows.append(
            {
                "id": refund["id"],
                "contract_id": contract["id"],
                "title": contract["title"],
                "client_id": contract["client_id"],
                "freelancer_id": contract["freelancer_id"],
                "currency": currency,
                "exponent": ISO_4217.get(currency, 2),
                "amount": refund["amount"],
                "shown": format_money(refund["amount"], currency),
                "milestone_id": refund["milestone_id"],
                "client_reason": refund["reason"],
                "freelancer_reason": (dispute["payload"].get("reason") if dispute else None) or "",
                "disputed_at": since,
                "waiting_s": max(0.0, (now - since).total_seconds()),
                "held": format_money(contract["held"], currency),
                "credit": format_money(contract["credit"], currency),
                "has_credit": contract["credit"] > 0,
                "approval": waiting.get(refund["id"]),
            }
        )
    return sorted(rows, key=lambda row: (row["disputed_at"], row["id"]))


def currency_of_refund(db: DBEngine, refund_id: int) -> str:
    """The currency a refund's amounts are in (its contract's)."""
    with translated_errors(), db.connect() as conn:
        refund = entities.read_many(conn, "refund", [refund_id])
        if not refund:
            raise NotFound(f"refund {refund_id} does not exist", code="refund_not_found")
        (contract,) = entities.read_many(conn, "contract", [refund[0]["contract_id"]])
    return str(contract["currency"])
