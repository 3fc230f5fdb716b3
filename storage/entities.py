"""Every query on the lifecycle tables: contracts, milestones, change requests,
proposals (with their items) and refunds.

The engine locks a contract before anything else (all work on a contract is serialised
and locks are always taken in the same order), loads the rows it decides on, inserts
new entities and writes back what changed; the views read. Nobody else writes SQL on
these tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from storage import deadlines, models, paging
from storage.db import id_in
from storage.statements import Row, Statements

_contracts = models.CONTRACTS
_milestones = models.MILESTONES
_items = models.PROPOSAL_ITEMS
TABLES = models.TABLES


def _lock_contract_of(key: Any) -> tuple[sa.Select[Any], sa.Select[Any]]:
    """Select, and (second) select and lock, the contract whose id is `key`."""
    query = sa.select(_contracts).where(_contracts.c.id == key)
    return query, query.with_for_update(of=_contracts)


def _contract_id_of(table: sa.Table) -> Any:
    return sa.select(table.c.contract_id).where(table.c.id == sa.bindparam("pk")).scalar_subquery()


# Built once: values travel as parameters, so each statement is compiled once.
_LOCK = {
    "contract": _lock_contract_of(sa.bindparam("pk")),
    "deadline": _lock_contract_of(deadlines.contract_id_of()),
    **{
        name: _lock_contract_of(_contract_id_of(table))
        for name, table in TABLES.items()
        if name != "contract"
    },
}
_LOAD = {name: sa.select(t).where(t.c.id == sa.bindparam("pk")) for name, t in TABLES.items()}


# -- the engine -------------------------------------------------------------------------


def lock_contract_of(tx: Statements, entity: str, entity_id: int) -> Row | None:
    """Lock (on PostgreSQL; SQLite's write transaction already excludes other writers)
    and read the contract that entity `entity_id` belongs to."""
    plain, for_update = _LOCK[entity]
    found = tx.fetch_one(for_update if tx.locks_rows else plain, {"pk": entity_id})
    return None if found is None else Row("contract", _contracts, found)


def lock_contract_and_load(
    tx: Statements, entity: str, entity_id: int, *also: sa.Select[Any]
) -> tuple[Row | None, Row | None, list[dict[str, Any] | None]]:
    """`lock_contract_of` and `load`, and the first row of each of `also`, in one round
    trip (in a pipelined transaction): they run after the lock is granted, so they see
    what its holder left."""
    plain, for_update = _LOCK[entity]
    contract, found, *more = tx.fetch_ones(
        [
            (for_update if tx.locks_rows else plain, {"pk": entity_id}),
            (_LOAD[entity], {"pk": entity_id}),
            *((query, {}) for query in also),
        ]
    )
    return (
        None if contract is None else Row("contract", _contracts, contract),
        None if found is None else Row(entity, TABLES[entity], found),
        more,
    )


def load(tx: Statements, entity: str, entity_id: int) -> Row | None:
    found = tx.fetch_one(_LOAD[entity], {"pk": entity_id})
    return None if found is None else Row(entity, TABLES[entity], found)


def insert(tx: Statements, entity: str, values: dict[str, Any]) -> Row:
    """A new entity row; its id is set in the returned row."""
    row = dict(values)
    row["id"] = tx.insert(TABLES[entity], row)
    return Row(entity, TABLES[entity], row)


def write(tx: Statements, row: Row, *, later: bool = False) -> None:
    """Write what changed in `row` (with the batch if `later` and there is one)."""
    tx.write_row(row, later=later)


def last_position(tx: Statements, contract_id: int) -> int:
    """The highest milestone position in a contract (0 for none)."""
    query = sa.select(sa.func.max(_milestones.c.position)).where(
        _milestones.c.contract_id == contract_id
    )
    return int(tx.scalar(query) or 0)


def not_started(tx: Statements, contract_id: int) -> list[Any]:
    """The milestones not started yet (id, position), in contract order (MS3)."""
    m = _milestones.c
    return tx.fetch_all(
        sa.select(m.id, m.position)
        .where(m.contract_id == contract_id, m.state == "pending")
        .order_by(m.position)
    )


def add_proposal_items(tx: Statements, rows: list[dict[str, Any]]) -> None:
    tx.append_many(_items, rows)


def proposal_items(conn: Connection, proposal_id: int) -> list[dict[str, Any]]:
    """A proposal's items in the order proposed (FP2)."""
    query = sa.select(_items).where(_items.c.proposal_id == proposal_id)
    return [dict(r) for r in conn.execute(query.order_by(_items.c.ordinal)).mappings()]


def proposal_names(tx: Statements, proposal_id: int, milestone_id: int) -> bool:
    """Whether a proposal has an item for the milestone (FP2)."""
    query = sa.select(sa.func.count()).where(
        _items.c.proposal_id == proposal_id, _items.c.milestone_id == milestone_id
    )
    return bool(tx.scalar(query))


# -- the views ------------------------------------------------------------------------


def read(conn: Connection, entity: str, entity_id: int) -> dict[str, Any] | None:
    table = TABLES[entity]
    row = conn.execute(sa.select(table).where(table.c.id == entity_id)).mappings().first()
    return None if row is None else dict(row)


# Lists: the filters each one takes (equality on an indexed column) and its order.
LIST_FILTERS: dict[str, tuple[str, ...]] = {
    "contract": ("client_id", "freelancer_id", "state"),
    "milestone": ("contract_id",),
    "change_request": ("state", "contract_id"),
    "proposal": ("state", "contract_id"),
    "refund": ("state", "contract_id"),
}


def list_order(entity: str) -> tuple[Any, ...]:
    """Milestones in contract order (ix_milestones_contract_position); the rest by id."""
    table = TABLES[entity]
    return (table.c.position, table.c.id) if entity == "milestone" else (table.c.id,)


def page(
    conn: Connection,
    entity: str,
    filters: dict[str, Any],
    party: tuple[str, str] | None,
    after: tuple[Any, ...] | None,
    limit: int,
) -> list[dict[str, Any]]:
    """A page of an entity's rows; `party` (`("client_id", "acme")`) keeps only the
    rows of that party's contracts."""
    table = TABLES[entity]
    query = sa.select(table)
    for name, value in filters.items():
        query = query.where(table.c[name] == value)
    if party is not None:
        column, who = party
        if entity == "contract":
            query = query.where(table.c[column] == who)
        else:
            mine = sa.select(_contracts.c.id).where(_contracts.c[column] == who)
            query = query.where(table.c.contract_id.in_(mine))
    return paging.page(conn, query, list_order(entity), after, limit)


def ids_of_contract(conn: Connection, contract_id: int) -> dict[str, list[int]]:
    """The ids of every entity of a contract, by kind (the contract's own included)."""
    found: dict[str, list[int]] = {"contract": [contract_id]}
    for name, table in TABLES.items():
        if name != "contract":
            query = sa.select(table.c.id).where(table.c.contract_id == contract_id)
            found[name] = list(conn.execute(query.order_by(table.c.id)).scalars())
    return found


def lock_many(tx: Statements, contract_ids: Sequence[int]) -> list[dict[str, Any]]:
    """Lock contracts in id order (no lock cycle with another worker) and read them, in
    one statement prepared once whatever the number of ids (where rows are locked one
    by one: PostgreSQL).

    A contract another connection holds is skipped, not waited for (`SKIP LOCKED`): no
    row held elsewhere can stop a sweep; the caller sees which ones it did not get."""
    return tx.fetch_by_ids(_contracts, contract_ids, locked=True)


def in_state(conn: Connection, entity: str, state: str, limit: int) -> list[dict[str, Any]]:
    """Up to `limit` entities of a kind in `state`, oldest first (the dispute desk's
    queue: disputed refunds)."""
    table = TABLES[entity]
    query = sa.select(table).where(table.c.state == state).order_by(table.c.id).limit(limit)
    return [dict(row) for row in conn.execute(query).mappings()]


def batch_of(tx: Statements, entity: str, entity_ids: Sequence[int]) -> list[dict[str, Any]]:
    """The entities of `entity_ids` (a sweep's batch: one prepared statement)."""
    return tx.fetch_by_ids(TABLES[entity], entity_ids)


def read_many(conn: Connection, entity: str, entity_ids: list[int]) -> list[dict[str, Any]]:
    table = TABLES[entity]
    query = sa.select(table).where(id_in(conn, table.c.id, entity_ids))
    return [dict(row) for row in conn.execute(query).mappings()]


# -- terms (TM1) -------------------------------------------------------------------------


def contracts_by_terms(conn: Connection, terms_id: int | None = None) -> dict[int, int]:
    """How many contracts run under each terms version (or under `terms_id` only)."""
    c = _contracts.c
    chosen = c.terms_id.is_not(None) if terms_id is None else c.terms_id == terms_id
    query = sa.select(c.terms_id, sa.func.count()).where(chosen)
    return {row[0]: row[1] for row in conn.execute(query.group_by(c.terms_id))}


def give_terms_to_unassigned(conn: Connection, terms_id: int) -> int:
    """Contracts from before terms were recorded run under `terms_id` (the settings then
    in force); how many there were."""
    c = _contracts.c
    statement = _contracts.update().where(c.terms_id.is_(None)).values(terms_id=terms_id)
    return int(conn.execute(statement).rowcount)


def selected(
    conn: Connection, criteria: dict[str, Any], states: list[str], excluded_terms: int
) -> list[dict[str, Any]]:
    """The contracts a terms migration selects (TM2): every criterion holds (`terms_id`,
    `client_id`, `freelancer_id`, `ids`), the state is one of `states`, and the contract
    is not already under `excluded_terms`. In id order."""
    c = _contracts.c
    query = sa.select(c.id, c.terms_id, c.state, c.client_id, c.freelancer_id, c.currency)
    query = query.where(c.state.in_(states), c.terms_id != excluded_terms)
    for column in ("terms_id", "client_id", "freelancer_id"):
        if criteria.get(column) is not None:
            query = query.where(c[column] == criteria[column])
    if criteria.get("ids"):
        query = query.where(id_in(conn, c.id, criteria["ids"]))
    return [dict(row) for row in conn.execute(query.order_by(c.id)).mappings()]


def set_terms(tx: Statements, contract_id: int, terms_id: int) -> None:
    tx.update(_contracts, contract_id, {"terms_id": terms_id})
