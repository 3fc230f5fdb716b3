"""What a sweep reads of its batch at once: its contracts locked, its deadlines and their
entities, a few statements for the whole batch instead of three per deadline.

Where rows are locked one by one (PostgreSQL), the contracts are locked in ascending id
order and those another connection holds are skipped (`SKIP LOCKED`), so no row held
elsewhere stops a sweep. Where a write transaction shuts out every other writer
(SQLite), there is nothing to lock, and each deadline is read with its contract in one
statement as it fires: these functions answer None.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Connection

from storage import deadlines, entities, history
from storage.dialect import adapter_of

Found = dict[tuple[str, int], dict[str, Any]]


def lock_contracts(conn: Connection, contract_ids: Sequence[int]) -> set[int] | None:
    """The contracts of `contract_ids` this transaction now holds (not those held
    elsewhere); None: the transaction holds them all (one writer)."""
    if not adapter_of(conn).locks_rows:
        return None
    return {row["id"] for row in entities.lock_many(conn, sorted(set(contract_ids)))}


def lock_and_read(conn: Connection, claimed: Sequence[Any]) -> Found | None:
    """The batch's contracts locked (see `lock_contracts`), and its deadlines and their
    entities read, by (kind, id); None on one writer."""
    return lock_and_read_ids(conn, [r.contract_id for r in claimed], [r.id for r in claimed])


def lock_and_read_ids(
    conn: Connection, contract_ids: Sequence[int], deadline_ids: Sequence[int]
) -> Found | None:
    """`lock_and_read` by ids: the contracts locked, then the deadlines and their
    entities read under those locks (a bulk action's chunk, DL4)."""
    if not adapter_of(conn).locks_rows:
        return None
    found: Found = {}
    for row in entities.lock_many(conn, sorted(set(contract_ids))):
        found[("contract", row["id"])] = row
    kinds: dict[str, list[int]] = {}
    for row in deadlines.read_many(conn, list(deadline_ids)):
        found[("deadline", row["id"])] = row
        kinds.setdefault(row["entity"], []).append(row["entity_id"])
    for entity, ids in kinds.items():
        for row in entities.read_many(conn, entity, ids):
            found[(entity, row["id"])] = row
    return found


def history_ids(conn: Connection, count: int) -> list[int]:
    """Ids for the history rows a batch writes, taken ahead (after its locks, so a
    contract's rows keep their order) where the database hands out ids from a sequence;
    none on one writer (SQLite hands them out at insert)."""
    return history.take_ids(conn, count) if adapter_of(conn).takes_ids_ahead else []
