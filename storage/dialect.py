"""The port every database adapter fills, and the one place that picks the adapter.

storage runs the same statements on PostgreSQL and SQLite, except where the two differ
in kind; each difference is a member here, answered by `postgresql.PostgreSQL` and
`sqlite.SQLite`. No module asks a dialect's name but `adapter_of` (issue 21: a test
checks it), so a third backend is one more adapter and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from storage.postgresql import PostgreSQL
from storage.sqlite import SQLite


class Adapter(Protocol):
    """What storage does differently on one database."""

    name: str

    locks_rows: bool
    """Rows are locked one by one (`FOR UPDATE`); False where a write transaction shuts
    out every other writer, so a row read in it is as good as locked."""

    takes_ids_ahead: bool
    """Ids can be taken from a table's sequence before the row is written."""

    returns_ids: bool
    """An INSERT can return its new id (`RETURNING`); otherwise the cursor's lastrowid."""

    unnests: bool
    """Many rows go as one statement over arrays (`unnest`), not a driver loop."""

    shares_clock: bool
    """Processes on several hosts share the server, so its clock is the deployment's
    (DL2); False for a file on one host."""

    stores_naive_utc: bool
    """Datetimes are stored without a zone (as UTC)."""

    alters_by_copy: bool
    """Most ALTERs copy the table (Alembic's batch mode)."""

    snapshot_options: dict[str, Any]
    """Execution options under which a read transaction sees one moment throughout
    (PostgreSQL's REPEATABLE READ; on SQLite every read transaction already does)."""

    def make(
        self,
        url: sa.URL,
        lock_timeout: float,
        *,
        synchronous: str,
        create: bool,
        **engine_kwargs: Any,
    ) -> Engine:
        """An engine whose every wait for a lock is bounded by `lock_timeout` seconds
        (`synchronous`: SQLite's durability setting; `create`: whether a database that
        does not exist yet may be made, where the driver would make one)."""
        ...

    def url(self, text: str) -> sa.URL:
        """`text` (ESCROWFLOW_DATABASE_URL) as SQLAlchemy's URL (PostgreSQL: libpq's
        several-host form, `postgresql://h1:5432,h2:5432/db`, too)."""
        ...

    def whereabouts(self, conn: Connection) -> dict[str, Any]:
        """Which server `conn` is on, as an operator tells a switch: its host and, where
        a server can be promoted, its timeline (a promotion starts a new one)."""
        ...

    def shown(self, url: sa.URL) -> str:
        """The database as a person names it: a file's absolute path, a server's URL
        without its password."""
        ...

    def sole_worker(self, url: sa.URL) -> AbstractContextManager[None]:
        """Held while a process runs the worker: where one writer takes the whole file,
        a second worker is refused (`ConflictError`, database_in_use) instead of
        starting to wait on the first."""
        ...

    def write_turn(self, engine: Engine) -> AbstractContextManager[None]:
        """Held around a write transaction: where there is one writer, a process's
        writers take turns here, each waiting a bounded time."""
        ...

    def id_in(self, column: sa.ColumnElement[int], ids: Sequence[int]) -> sa.ColumnElement[bool]:
        """`column IN ids`, as this database takes a list best."""
        ...

    def in_ids(self, column: sa.ColumnElement[int]) -> sa.ColumnElement[bool]:
        """`column IN` the list of ints given as the one parameter `ids`: a statement
        prepared once whatever the number of ids (a batch's reads)."""
        ...

    def claim(
        self,
        conn: Connection,
        query: sa.Select[Any],
        table: sa.Table,
        lease: dict[str, Any],
        rechecked: bool,
    ) -> list[sa.Row[Any]]:
        """The rows of `query`, leased (`lease` written on them), in one transaction.
        `rechecked`: the work on each row re-checks it in a write transaction of its own
        (a deadline's firing), so where such a transaction shuts out every other writer
        the lease keeps nothing out, and is not written."""
        ...

    def pipeline(self, conn: Connection) -> AbstractContextManager[None]:
        """Statements of the block sent without waiting for each answer, where the driver
        can; a no-op elsewhere."""
        ...

    def insert(self, table: sa.Table) -> Any:
        """An INSERT construct with this database's `ON CONFLICT`."""
        ...

    def utc_day(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        """The UTC calendar day of a datetime column, to group by."""
        ...

    def index_condition(self, column: sa.ColumnElement[Any], value: str) -> sa.ColumnElement[bool]:
        """`column = value` written as a partial index's condition is, so the planner
        uses that index."""
        ...

    def owns(self, error: BaseException) -> bool:
        """The driver error is this database's."""
        ...

    def constraint_of(self, error: BaseException) -> str | None:
        """The name of the constraint a refused write broke, if the driver says it."""
        ...

    def is_unique_violation(self, error: BaseException) -> bool: ...

    def is_busy(self, error: BaseException) -> bool:
        """A wait ran out, or a concurrent change got in the way: try again."""
        ...

    def is_not_migrated(self, error: BaseException) -> bool:
        """A table is missing: the schema was never made."""
        ...

    def is_unopenable(self, error: BaseException) -> bool:
        """The database itself cannot be opened (a file's directory missing)."""
        ...


class _HasDialect(Protocol):
    @property
    def dialect(self) -> sa.Dialect: ...


def adapter_of(bind: _HasDialect | sa.Dialect) -> Adapter:
    """The adapter of an engine's, a connection's or a SQLAlchemy dialect's database."""
    dialect = bind if isinstance(bind, sa.Dialect) else bind.dialect
    return _ADAPTERS[dialect.name]


def parse_url(text: str) -> sa.URL:
    """A database URL as SQLAlchemy's, read by the adapter of its backend (libpq's
    several-host form on PostgreSQL); a backend escrowflow does not run on, as
    SQLAlchemy reads it."""
    backend = text.split(":", 1)[0].split("+", 1)[0]
    adapter = adapter_named(backend)
    return adapter.url(text) if adapter is not None else sa.make_url(text)


def adapter_named(name: str) -> Adapter | None:
    """The adapter of a database URL's backend name (None: not one escrowflow runs on)."""
    return _ADAPTERS.get(name)


def adapter_of_error(error: BaseException) -> Adapter | None:
    """The adapter whose driver raised `error` (None: not a driver error)."""
    return next((a for a in _ADAPTERS.values() if a.owns(error)), None)


_ADAPTERS: dict[str, Adapter] = {"postgresql": PostgreSQL(), "sqlite": SQLite()}
