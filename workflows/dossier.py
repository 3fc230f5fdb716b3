"""A contract's dossier, for arbitration and audits: its terms, parties and totals, its
milestones and other entities, one timeline merging history, ledger moves and deadline
rows, the ledger with its running balance and every deadline it ever had. As one JSON
document (money in minor units with the currency, times in ISO 8601) or one CSV file
(the timeline, a row per moment, money also as people read it)."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine as DBEngine

from storage import deadlines
from storage.db import translated_errors
from workflows import inspector
from workflows.policy import format_money

CSV_COLUMNS = (
    "at", "kind", "entity", "entity_id", "event", "from_state", "to_state", "who",
    "amount", "currency", "amount_shown", "details",
)  # fmt: skip


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def dossier(db: DBEngine, contract_id: int) -> dict[str, Any]:
    """Everything about one contract, as JSON-ready values."""
    page = inspector.contract_page(db, contract_id)
    with translated_errors(), db.connect() as conn:
        every = deadlines.read_many(conn, deadlines.ids_of_contract(conn, contract_id))
    currency = page["contract"]["currency"]
    timeline: list[dict[str, Any]] = []
    for h in page["history"]:
        timeline.append(
            {"at": h["at"], "kind": "history", "entity": h["entity"], "entity_id": h["entity_id"],
             "event": h["event"], "from_state": h["from_state"], "to_state": h["to_state"],
             "who": f"{h['actor_role']}:{h['actor_party']}", "amount": None,
             "details": h["payload"] or {}}
        )  # fmt: skip
    for e in page["ledger"]:
        timeline.append(
            {"at": e["at"], "kind": "ledger", "entity": "contract", "entity_id": contract_id,
             "event": e["kind"], "from_state": None, "to_state": None, "who": None,
             "amount": e["amount"], "details": {"balance": e["balance"],
                                                "milestone_id": e["milestone_id"],
                                                "refund_id": e["refund_id"]}}
        )  # fmt: skip
    for d in every:
        timeline.append(
            {"at": d["due_at"], "kind": f"deadline {d['status']}", "entity": d["entity"],
             "entity_id": d["entity_id"], "event": d["event"], "from_state": None,
             "to_state": None, "who": None, "amount": d["amount"],
             "details": {"deadline_id": d["id"], "paused": bool(d["paused"]),
                         "failed": d["failed_at"] is not None}}
        )  # fmt: skip
    timeline.sort(key=lambda row: (row["at"], row["kind"] != "history"))
    found: dict[str, Any] = _plain(
        {
            "contract": page["contract"],
            "terms": page["terms"],
            "milestones": page["milestones"],
            "others": page["others"],
            "timeline": [{**row, "currency": currency} for row in timeline],
            "ledger": page["ledger"],
            "deadlines": sorted(every, key=lambda d: d["id"]),
        }
    )
    return found


def as_json(found: dict[str, Any]) -> str:
    return json.dumps(found, indent=2, sort_keys=True, default=str)


def as_csv(found: dict[str, Any]) -> str:
    """The dossier's timeline as CSV: one row per moment, money as integers and as shown."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in found["timeline"]:
        shown = "" if row["amount"] is None else format_money(row["amount"], row["currency"])
        writer.writerow(
            [row["at"], row["kind"], row["entity"], row["entity_id"], row["event"],
             row["from_state"] or "", row["to_state"] or "", row["who"] or "",
             "" if row["amount"] is None else row["amount"], row["currency"], shown,
             json.dumps(row["details"], sort_keys=True, default=str)]
        )  # fmt: skip
    return out.getvalue()
