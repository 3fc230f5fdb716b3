"""The one write path: how every transition and every batch of deadlines writes.

Chosen by measurement (`bench/write_path.py` runs both side by side): SQLAlchemy Core
costs ~75 us per execute in Python; the same statement compiled once by SQLAlchemy and
run on the connection's DBAPI cursor (`storage/fastpath.py`) costs ~6 us, and an event
writes about eight statements. So inside a transaction all writes go through
:class:`Writes`: statements built with SQLAlchemy Core over the SQLModel tables (used
only as Core tables: no ORM session anywhere), prepared once per dialect, run on the
cursor. Rows nobody reads back before commit wait in a :class:`Batch` and go with one
executemany per statement. Savepoints are SQLAlchemy's (`Connection.begin_nested`).

The table owners (`storage/deadlines.py`, `history.py`, `ledger.py`, `outbox.py`,
`idempotency.py`, `entities.py`) hold the statements; this module only runs them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from storage.fastpath import FastPath, Prepared, insert_statement, update_statement


class Row:
    """A row loaded for update: its values, and the columns changed since loading."""

    __slots__ = ("changed", "entity", "table", "values")

    def __init__(self, entity: str, table: sa.Table, values: dict[str, Any]) -> None:
        self.entity = entity
        self.table = table
        self.values = values
        self.changed: dict[str, Any] = {}

    def __getitem__(self, column: str) -> Any:
        return self.values[column]

    @property
    def id(self) -> int:
        return int(self.values["id"])

    def set(self, **columns: Any) -> None:
        self.values.update(columns)
        self.changed.update(columns)

    def add(self, **amounts: int) -> None:
        """Add to integer columns (money totals)."""
        self.set(**{column: self.values[column] + delta for column, delta in amounts.items()})


class Batch:
    """Writes nobody reads back before commit, kept to be written together.

    Ledger entries, outbox events and the closing of fired deadlines are only ever
    appended; a contract's and its entities' new states are read again only by later
    work on the same contract. A sweep fires hundreds of deadlines in one transaction;
    writing each kind once, with the driver's executemany, saves a round trip per row.
    `Writes.settle` writes it before a contract with writes waiting here is read again
    (`touched`); its owner writes the rest at the end (`Writes.write_batch`).
    """

    def __init__(self) -> None:
        # Rows by statement: its parameters by name, or (`by_column`) rows by column name.
        self._rows: dict[Any, tuple[Prepared, list[Mapping[str, Any]], bool]] = {}
        self.touched: set[int] = set()  # contracts with writes waiting here
        # Rows read for the whole batch at once, under its contracts' locks, by
        # (entity, id): each contract's are good for the first work on it only (that
        # work takes the contract's row out, so later work on it reads again).
        self.prefetched: dict[tuple[str, int], dict[str, Any]] = {}
        # Ids taken from a table's sequence ahead, for rows inserted with the batch
        # whose ids other rows need at once (history: ledger and events point to it);
        # on one writer, the next id of such a table instead, counted on as handed out.
        self.ids: dict[str, list[int]] = {}
        self.counted: dict[str, int] = {}
        self._first: dict[Any, tuple[Prepared, list[Mapping[str, Any]], bool]] = {}
        self._pending: dict[tuple[str, int], dict[str, Any]] = {}

    def add(
        self, key: Any, prepared: Prepared, values: Mapping[str, Any], *, by_column: bool = False
    ) -> None:
        """Parameters of `prepared` by name, or (`by_column`) a row by column name."""
        self._rows.setdefault(key, (prepared, [], by_column))[1].append(values)

    def add_first(self, table: str, key: Any, prepared: Prepared, row: dict[str, Any]) -> None:
        """A row (by column name) with its id already given, written before the rest
        (which may point to it) and amendable until then (`amend`)."""
        self._first.setdefault(key, (prepared, [], True))[1].append(row)
        self._pending[(table, row["id"])] = row

    def amend(self, table: str, row_id: int, changes: Mapping[str, Any]) -> bool:
        """Change a row still waiting here; whether it was here."""
        row = self._pending.get((table, row_id))
        if row is None:
            return False
        row.update(changes)
        return True

    def write(self, fast: FastPath, conn: Connection) -> None:
        for prepared, rows, by_column in (*self._first.values(), *self._rows.values()):
            fast.execute_many(conn, prepared, rows, by_column=by_column)
        self._first.clear()
        self._pending.clear()
        self._rows.clear()
        self.touched.clear()


def _same(statement: sa.ClauseElement) -> sa.ClauseElement:
    return statement


def _by_ids(table: sa.Table, adapter: Any) -> sa.Select[Any]:
    return sa.select(table).where(adapter.in_ids(table.c.id))


def _locked_by_ids(table: sa.Table, adapter: Any) -> sa.Select[Any]:
    query = _by_ids(table, adapter).order_by(table.c.id)
    return query.with_for_update(skip_locked=True)


class Statements:
    """Runs prepared statements in one transaction; with a batch, defers what it may."""

    def __init__(self, fast: FastPath, conn: Connection, batch: Batch | None = None) -> None:
        self.fast = fast
        self.conn = conn
        self.batch = batch
        # Ids taken ahead from a table's sequence, for rows whose ids others need at once
        # (history: ledger entries and events point to it), handed out by `pop()`.
        self.ids: dict[str, list[int]] = batch.ids if batch is not None else {}

    @property
    def locks_rows(self) -> bool:
        """For storage's own statements; the layers above ask `one_writer`."""
        return self.fast.adapter.locks_rows

    @property
    def one_writer(self) -> bool:
        """A write transaction shuts out every other writer (SQLite): a row read in it
        is as good as locked, and reading two rows in one statement as locking first.
        Otherwise (PostgreSQL) rows are locked one by one, and a history id can be
        taken in the same round trip as the lock (`history.NEXT_ID`)."""
        return not self.locks_rows

    def _prepared(self, statement: sa.ClauseElement) -> Prepared:
        return self.fast.prepare(statement, _same, statement)

    # reading (under the transaction's locks)

    def fetch_one(
        self, statement: sa.ClauseElement, values: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """The first row of a prepared SELECT, as a dict."""
        return self.fast.fetch_one(self.conn, self._prepared(statement), values)

    def fetch_ones(
        self, reads: Sequence[tuple[sa.ClauseElement, Mapping[str, Any]]]
    ) -> list[dict[str, Any] | None]:
        """The first row of each prepared SELECT, all sent before the answers are read."""
        prepared = [(self._prepared(statement), values) for statement, values in reads]
        rows = self.fast.fetch_rows(self.conn, prepared)
        return [
            None if row is None else dict(zip(p.keys, row, strict=True))
            for (p, _), row in zip(prepared, rows, strict=True)
        ]

    def fetch_row(self, statement: sa.ClauseElement, values: Mapping[str, Any]) -> list[Any] | None:
        """The first row of a prepared SELECT, as a list in the select's column order."""
        return self.fast.fetch_row(self.conn, self._prepared(statement), values)

    def fetch_many(
        self, statement: sa.ClauseElement, values: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """Every row of a prepared SELECT (built once, values as parameters), as dicts."""
        return self.fast.fetch_all(self.conn, self._prepared(statement), values)

    def fetch_by_ids(
        self, table: sa.Table, ids: Sequence[int], *, locked: bool = False
    ) -> list[dict[str, Any]]:
        """Every row of `table` whose id is in `ids`, as dicts: one statement prepared
        once per table whatever the number of ids (a batch's reads). `locked`: in id
        order, each locked for this transaction, and those another holds skipped (`FOR
        UPDATE SKIP LOCKED`, where rows are locked one by one)."""
        kind, build = ("locked_by_ids", _locked_by_ids) if locked else ("by_ids", _by_ids)
        prepared = self.fast.prepare((kind, table.name), build, table, self.fast.adapter)
        return self.fast.fetch_all(self.conn, prepared, {"ids": list(ids)})

    def fetch_all(self, statement: sa.Select[Any]) -> list[Any]:
        """Every row of a one-off SELECT (not on the hot path)."""
        return list(self.conn.execute(statement).all())

    def scalar(self, statement: sa.Select[Any]) -> Any:
        """The one value of a one-off SELECT (not on the hot path)."""
        return self.conn.execute(statement).scalar()

    # writing

    def insert(self, table: sa.Table, values: Mapping[str, Any]) -> int:
        """Insert a row now; its new id."""
        columns = tuple(values)
        prepared = self.fast.prepare(
            ("insert", table.name, columns), insert_statement, table, columns, self.fast.dialect
        )
        return self.fast.insert(self.conn, prepared, values)

    def append(self, table: sa.Table, values: Mapping[str, Any]) -> None:
        """Insert a row whose id nobody needs: now, or with the batch."""
        columns = tuple(values)
        key = ("append", table.name, columns)
        prepared = self.fast.prepare(
            key, insert_statement, table, columns, self.fast.dialect, False
        )
        if self.batch is None:
            self.fast.execute(self.conn, prepared, values, by_column=True)
        else:
            self.batch.add(key, prepared, values, by_column=True)

    def insert_with_batch(self, table: sa.Table, values: Mapping[str, Any]) -> int:
        """Insert a row whose id is needed at once. Under an id taken ahead from its
        sequence (`ids`) while one is left: with the batch if any, otherwise now without
        waiting for an answer (in a pipeline); with none left, now, reading its new id."""
        ids = self.ids.get(table.name)
        if ids:
            row_id = ids.pop()
        elif self.batch is not None and table.name in self.batch.counted:
            row_id = self.batch.counted[table.name]
            self.batch.counted[table.name] = row_id + 1
        else:
            return self.insert(table, values)
        row = {**values, "id": row_id}
        if self.batch is None:
            self.append(table, row)
            return int(row["id"])
        columns = tuple(row)
        key = ("append", table.name, columns)
        prepared = self.fast.prepare(
            key, insert_statement, table, columns, self.fast.dialect, False
        )
        self.batch.add_first(table.name, key, prepared, row)
        return int(row["id"])

    def amend(self, table: sa.Table, pk: int, changed: Mapping[str, Any]) -> None:
        """Set columns of row `pk`: in the batch if it waits there, otherwise now."""
        if self.batch is None or not self.batch.amend(table.name, pk, changed):
            self.update(table, pk, changed)

    def append_many(self, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert rows (all with the same columns) whose ids nobody needs, together."""
        if not rows:
            return
        columns = tuple(rows[0])
        prepared = self.fast.prepare(
            ("append", table.name, columns), insert_statement, table, columns,
            self.fast.dialect, False,
        )  # fmt: skip
        self.fast.execute_many(self.conn, prepared, rows, by_column=True)

    def update(
        self, table: sa.Table, pk: int, changed: Mapping[str, Any], *, later: bool = False
    ) -> None:
        """Set `changed` columns of row `pk`: now, or (`later`) with the batch if any."""
        columns = tuple(changed)
        key = ("update", table.name, columns)
        prepared = self.fast.prepare(key, update_statement, table, columns)
        row = {**changed, "pk": pk}
        if later and self.batch is not None:
            self.batch.add(key, prepared, row, by_column=True)
        else:
            self.fast.execute(self.conn, prepared, row, by_column=True)

    def execute(
        self, statement: sa.Executable, values: Mapping[str, Any], *, later: bool = False
    ) -> None:
        """Run a prepared UPDATE/INSERT now, or (`later`) with the batch if any."""
        prepared = self._prepared(statement)  # type: ignore[arg-type]
        if later and self.batch is not None:
            self.batch.add(statement, prepared, values)
        else:
            self.fast.execute(self.conn, prepared, values)

    def settle(self, contract_id: int) -> bool:
        """Write the batch now if it holds writes for `contract_id` (to be read again);
        whether it did."""
        if self.batch is None or contract_id not in self.batch.touched:
            return False
        self.batch.write(self.fast, self.conn)
        return True

    def write_batch(self) -> None:
        """Write whatever the batch holds (at the end of the transaction)."""
        if self.batch is not None:
            self.batch.write(self.fast, self.conn)

    def write_row(self, row: Row, *, later: bool = False) -> None:
        """Write what changed in `row` since it was loaded."""
        if row.changed:
            self.update(row.table, row.id, row.changed, later=later)
            row.changed = {}

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A savepoint (SQLAlchemy's): rolled back alone if the block raises."""
        with self.conn.begin_nested():
            yield
