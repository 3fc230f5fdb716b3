"""What a sweep reads of its batch at once: its contracts locked, its deadlines and their
entities, a few statements for the whole batch instead of three per deadline; and the
ids its history rows will have, so that they go with the batch too.

Where rows are locked one by one (PostgreSQL), the contracts are locked in ascending id
order and those another connection holds are skipped (`SKIP LOCKED`), so no row held
elsewhere stops a sweep. Where a write transaction shuts out every other writer
(SQLite), there is nothing to lock: the batch's rows are read as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Connection

from storage import deadlines, entities, history
from storage.dialect import adapter_of
from storage.statements import Batch, Statements

Found = dict[tuple[str, int], dict[str, Any]]


def lock_contracts(tx: Statements, contract_ids: Sequence[int]) -> set[int] | None:
    """The contracts of `contract_ids` this transaction now holds (not those held
    elsewhere); None: the transaction holds them all (one writer)."""
    if not tx.locks_rows:
        return None
    return {row["id"] for row in entities.lock_many(tx, sorted(set(contract_ids)))}


def lock_and_read(tx: Statements, claimed: Sequence[Any]) -> Found:
    """The batch's contracts locked (see `lock_contracts`; on one writer, all), and its
    deadlines and their entities read, by (kind, id)."""
    return lock_and_read_ids(tx, [r.contract_id for r in claimed], [r.id for r in claimed])


def lock_and_read_ids(
    tx: Statements, contract_ids: Sequence[int], deadline_ids: Sequence[int]
) -> Found:
    """`lock_and_read` by ids: the contracts locked, then the deadlines and their
    entities read under those locks (a bulk action's chunk, DL4)."""
    found: Found = {}
    ordered = sorted(set(contract_ids))
    contracts = (
        entities.lock_many(tx, ordered)
        if tx.locks_rows
        else entities.batch_of(tx, "contract", ordered)  # the write lock holds them all
    )
    for row in contracts:
        found[("contract", row["id"])] = row
    kinds: dict[str, list[int]] = {}
    for row in deadlines.batch_of(tx, deadline_ids):
        found[("deadline", row["id"])] = row
        kinds.setdefault(row["entity"], []).append(row["entity_id"])
    for entity, ids in kinds.items():
        for row in entities.batch_of(tx, entity, ids):
            found[(entity, row["id"])] = row
    return found


def reserve_history_ids(conn: Connection, batch: Batch, count: int) -> None:
    """Ids for the history rows `batch` writes, so they go with it (ledger entries and
    events point to them): `count` taken ahead from the sequence (after the batch's
    locks, so a contract's rows keep their order) where the database has one; on one
    writer, counted on from the largest (no other writer can take one meanwhile)."""
    if adapter_of(conn).takes_ids_ahead:
        batch.ids["history"] = history.take_ids(conn, count)
    else:
        batch.counted["history"] = history.next_id(conn)
