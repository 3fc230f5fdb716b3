"""The console's contract search and its "needs attention" counts: read-only queries over
contracts and what hangs off them (deadlines, refunds).

Part of the lifecycle tables' queries (`storage.entities` owns their writes and every
other read); kept apart because search is its own job and its indexes are its own
(migration 0013: party prefixes and title words on PostgreSQL, pending deadlines by
contract, held-back deadlines, disputed refunds).

Every criterion is optional and they all hold together. Text matches ignore case: a
party's id *starts with* the prefix (client or freelancer), each title word appears
somewhere in the title. Pages are keyset pages in id order (`storage.paging`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from storage import models, paging

_c = models.CONTRACTS
_d = models.DEADLINES
_r = models.REFUNDS

# A text criterion (a party prefix, title words) that matches at most this many contracts
# is met through its index and sorted; more, by walking contracts in id order.
NARROW = 5_000
# Counts on the front page stop here: "10,000+" reads as well as the exact figure and
# costs a bounded index walk on any size of table.
COUNT_CAP = 10_000


@dataclass(frozen=True)
class ContractSearch:
    """What a search asks for (every field optional; all that are given hold)."""

    party_prefix: str | None = None
    title_words: tuple[str, ...] = ()
    state: str | None = None
    currency: str | None = None
    held_min: int | None = None
    held_max: int | None = None
    # Waiting on a timer (pending, neither paused nor failed) due at or before this.
    due_by: datetime | None = None
    has_dispute: bool = False
    # Has a deadline an admin paused or one whose firing failed for good (DL1, DL3).
    held_back: bool = False
    # A party sees only its own contracts: ("client_id", "acme").
    party: tuple[str, str] | None = None


def _like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _starts(column: Any, prefix: str) -> sa.ColumnElement[bool]:
    pattern = _like_escaped(prefix.lower()) + "%"
    return sa.func.lower(column).like(pattern, escape="\\")


def _contains(column: Any, word: str) -> sa.ColumnElement[bool]:
    pattern = "%" + _like_escaped(word.lower()) + "%"
    return sa.func.lower(column).like(pattern, escape="\\")


def _timer_due_by(due_by: datetime) -> sa.ColumnElement[bool]:
    return sa.exists().where(
        _d.c.contract_id == _c.c.id,
        _d.c.status == "pending",
        _d.c.due_at <= due_by,
        sa.not_(_d.c.paused),
        _d.c.failed_at.is_(None),
    )


def _held_back_deadline() -> sa.ColumnElement[bool]:
    return sa.and_(_d.c.status == "pending", sa.or_(_d.c.paused, _d.c.failed_at.is_not(None)))


def _disputed() -> sa.ColumnElement[bool]:
    return _r.c.state == "disputed"


def _text(search: ContractSearch) -> list[sa.ColumnElement[bool]]:
    c = _c.c
    clauses: list[sa.ColumnElement[bool]] = []
    if search.party_prefix:
        prefix = search.party_prefix
        clauses.append(sa.or_(_starts(c.client_id, prefix), _starts(c.freelancer_id, prefix)))
    clauses.extend(_contains(c.title, word) for word in search.title_words)
    return clauses


def _where(search: ContractSearch) -> list[sa.ColumnElement[bool]]:
    c = _c.c
    clauses = _text(search)
    if search.state is not None:
        clauses.append(c.state == search.state)
    if search.currency is not None:
        clauses.append(c.currency == search.currency)
    if search.held_min is not None:
        clauses.append(c.held >= search.held_min)
    if search.held_max is not None:
        clauses.append(c.held <= search.held_max)
    if search.due_by is not None:
        clauses.append(_timer_due_by(search.due_by))
    if search.has_dispute:
        # IN, not EXISTS: SQLite reads the few disputed refunds once instead of looking
        # for each contract's (its partial index does not serve `state = 'disputed'`).
        clauses.append(c.id.in_(sa.select(_r.c.contract_id).where(_disputed())))
    if search.held_back:
        clauses.append(sa.exists().where(_d.c.contract_id == c.id, _held_back_deadline()))
    if search.party is not None:
        column, who = search.party
        clauses.append(c[column] == who)
    return clauses


def contracts(
    conn: Connection, search: ContractSearch, after: int | None, limit: int
) -> list[dict[str, Any]]:
    """A page of the contracts `search` finds, by id, after the id `after`."""
    query = sa.select(_c).where(*_where(search))
    # The planner guesses how many contracts a prefix or a word matches badly: it walked
    # a million ids to find fifty. A capped probe through the text's own index decides:
    # few matches are read through it and sorted (`id + 0` takes the id index out of the
    # choice), many are met soon enough walking ids in order.
    text = _text(search)
    order = (
        _c.c.id + 0
        if text and _capped(conn, sa.select(_c.c.id).where(*text), NARROW) <= NARROW
        else _c.c.id
    )
    return paging.page(conn, query, (order,), None if after is None else (after,), limit)


def _capped(conn: Connection, query: sa.Select[Any], cap: int | None = None) -> int:
    """How many rows `query` selects, up to `cap` (COUNT_CAP unless given) + 1: more
    reads as "over the cap"."""
    bounded = query.limit((COUNT_CAP if cap is None else cap) + 1).subquery()
    return int(conn.execute(sa.select(sa.func.count()).select_from(bounded)).scalar_one())


def attention(conn: Connection, due_by: datetime) -> dict[str, int]:
    """The size of each "needs attention" view, capped at COUNT_CAP + 1: contracts with
    a disputed refund, with a paused or failed deadline, and waiting on a timer due at
    or before `due_by`."""
    disputed = sa.select(_r.c.contract_id).where(_disputed())
    held_back = sa.select(_d.c.contract_id).where(_held_back_deadline()).distinct()
    due = (
        sa.select(_d.c.contract_id)
        .where(
            _d.c.status == "pending",
            _d.c.due_at <= due_by,
            sa.not_(_d.c.paused),
            _d.c.failed_at.is_(None),
        )
        .distinct()
    )
    return {
        "disputes": _capped(conn, disputed),
        "held_back": _capped(conn, held_back),
        "due_soon": _capped(conn, due),
    }
