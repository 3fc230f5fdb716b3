"""What the operator console shows of one contract, read in one go: its parties and
state, milestones in order, every entity with its state, pending deadlines and
reminders with what they would move, what happens next, the history of every entity
(who, why, due and fired times, the changes) and the ledger with a running balance."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine as DBEngine

from storage import deadlines, entities
from storage import history as storage_history
from storage import ledger as storage_ledger
from storage.db import snapshot
from workflows import terms, views

_SIGN = {"deposit": 1, "release": -1, "refund": -1}


def contract_page(db: DBEngine, contract_id: int) -> dict[str, Any]:
    with snapshot(db) as conn:  # one moment: the milestones and the escrow agree
        contract = views.show_in(conn, "contract", contract_id)  # names a missing one
        what_next = views.what_next_in(conn, contract_id)
        ids = entities.ids_of_contract(conn, contract_id)
        everything = {"contract_id": contract_id}
        milestones = entities.page(conn, "milestone", everything, None, None, 10_000)
        others = {
            name: sorted(entities.read_many(conn, name, ids[name]), key=lambda r: r["id"])
            for name in ("change_request", "proposal", "refund")
        }
        rows = storage_history.of_entities(
            conn, {**ids, "deadline": deadlines.ids_of_contract(conn, contract_id)}
        )
        entries = storage_ledger.of_contract(conn, contract_id)
    balance, ledger = 0, []
    for entry in entries:
        balance += _SIGN[entry["kind"]] * entry["amount"]
        ledger.append({**entry, "balance": balance})
    return {
        "contract": contract,
        "milestones": milestones,
        "others": others,
        "next": what_next,
        "history": rows,
        "ledger": ledger,
        # TM1: the terms it runs under
        "terms": terms.show(db, contract["terms_id"]) if contract["terms_id"] else None,
    }
