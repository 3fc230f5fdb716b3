"""Database engines and transactions, with driver errors translated once, here.

`make_engine(settings)` is the only way to get an engine: nothing connects at import.
What each database does differently is in `postgresql.py` and `sqlite.py`, behind the
port `dialect.Adapter`, picked in one place (`dialect.adapter_of`). PostgreSQL runs at
READ COMMITTED; the engine above serialises work on a contract with `SELECT ... FOR
UPDATE` on the contract row; SQLite has one writer (`BEGIN IMMEDIATE`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from storage import sqlite
from storage.dialect import Adapter, adapter_named, adapter_of, adapter_of_error, parse_url
from storage.errors import (
    ConcurrentChange,
    ConflictError,
    StorageBusy,
    StorageError,
    ValidationError,
)

_NOTHING: contextlib.AbstractContextManager[None] = contextlib.nullcontext()


class DatabaseSettings(Protocol):
    """What storage needs to know; the application's settings object provides it."""

    @property
    def database_url(self) -> str: ...

    @property
    def sqlite_synchronous(self) -> str: ...


DEFAULT_LOCK_TIMEOUT_SECONDS = 5.0
"""How long a statement waits for a lock another transaction holds (a contract row on
PostgreSQL, the write lock on SQLite) before it gives up with `StorageBusy`."""
DEFAULT_POOL_TIMEOUT_SECONDS = 10.0
"""How long a request waits for a pooled connection (longer than a lock wait, so a
connection held by a request waiting on a lock comes free within it)."""
DEFAULT_POOL_SIZE = 10
"""Connections a process keeps open. As many again are opened for a burst and closed
when it ends; so with SQLAlchemy's 5, eight requests at once on PostgreSQL connected
afresh (a server process forked, authenticated) for three of them, each time
(`bench/http.py`: 8 clients 0.49-0.63 of in-process with 5, 0.68-0.76 with 10)."""


def make_engine(
    settings: DatabaseSettings,
    *,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT_SECONDS,
    create: bool = True,
    **engine_kwargs: Any,
) -> Engine:
    """Build the engine for `settings.database_url` (SQLite file or PostgreSQL). With
    `create` false, a SQLite file that does not exist is `StorageError` (not_migrated)
    instead of a new empty database.

    Every wait is bounded: a lock held elsewhere for longer than `lock_timeout` seconds,
    or no free pooled connection within the pool timeout, is `StorageBusy`."""
    url = parse_url(settings.database_url)
    engine_kwargs.setdefault("pool_timeout", DEFAULT_POOL_TIMEOUT_SECONDS)
    engine_kwargs.setdefault("pool_size", DEFAULT_POOL_SIZE)
    adapter = adapter_named(url.get_backend_name())
    if adapter is None:
        raise ValidationError(
            f"unsupported database URL {settings.database_url!r}: "
            "use sqlite:///path/to/file.db or postgresql://user@host/dbname",
            code="unsupported_database",
        )
    return adapter.make(
        url, lock_timeout, synchronous=settings.sqlite_synchronous, create=create, **engine_kwargs
    )


def database_shown(database_url: str) -> str:
    """The database as a person names it in a message (a file's absolute path, a
    server's URL without its password)."""
    url = parse_url(database_url)
    adapter = adapter_named(url.get_backend_name())
    return adapter.shown(url) if adapter is not None else url.render_as_string(hide_password=True)


def sole_worker(database_url: str) -> AbstractContextManager[None]:
    """Held while a process runs the worker on `database_url`: on a database that takes
    one writer (a SQLite file), a second worker is refused at start (`ConflictError`)."""
    url = parse_url(database_url)
    adapter = adapter_named(url.get_backend_name())
    return adapter.sole_worker(url) if adapter is not None else nullcontext()


_log = logging.getLogger("escrowflow.storage")


class _Unknown:
    """The adapter's questions, for an error no adapter's driver raised."""

    @staticmethod
    def _no(_error: BaseException) -> bool:
        return False

    is_unique_violation = is_busy = is_not_migrated = is_unopenable = _no

    @staticmethod
    def constraint_of(_error: BaseException) -> str | None:
        return None


def _driver_of(exc: sa.exc.DBAPIError) -> tuple[Adapter | _Unknown, BaseException]:
    """The adapter whose driver raised `exc`'s original error, and that error."""
    orig: BaseException = exc.orig if exc.orig is not None else exc
    return adapter_of_error(orig) or _Unknown(), orig


def _unavailable(exc: BaseException, code: str = "database_unavailable") -> StorageError:
    """The driver's words go to the log, never to a client (they may name the host)."""
    _log.warning(
        "database error",
        extra={"fields": {"event": "storage_error", "code": code, "error": repr(exc)[:500]}},
    )
    return StorageError(
        "the database could not do this now: try again later (the server's log has the detail)",
        code=code,
    )


@contextmanager
def translated_errors() -> Iterator[None]:
    """Turn driver errors into escrowflow errors, so no caller sees a DBAPI exception."""
    try:
        yield
    except sa.exc.IntegrityError as exc:
        driver, orig = _driver_of(exc)
        name = driver.constraint_of(orig) or "integrity"
        if driver.is_unique_violation(orig) or name.startswith("uq_"):
            raise ConcurrentChange(
                f"a concurrent change broke the uniqueness rule {name}: re-read and try again",
                details={"constraint": name},
            ) from exc
        raise ConflictError(
            f"the database refused a change that breaks {name}",
            code="constraint_violated",
            details={"constraint": name},
        ) from exc
    except sa.exc.DataError as exc:
        _log.warning(
            "value refused", extra={"fields": {"event": "data_error", "error": repr(exc)[:500]}}
        )
        raise ValidationError(
            "a value is out of range for the database", code="value_out_of_range"
        ) from exc
    except sa.exc.TimeoutError as exc:  # the pool: every connection in use
        raise StorageBusy(
            "every database connection is in use: try again in a moment",
            details={"retry_after_seconds": 1},
        ) from exc
    except (sa.exc.OperationalError, sa.exc.ProgrammingError) as exc:
        driver, orig = _driver_of(exc)
        if driver.is_busy(orig):
            raise StorageBusy(
                "another change holds this contract (or the database) right now: try again "
                "in a moment",
                code="database_busy",
                details={"retry_after_seconds": 1},
            ) from exc
        if driver.is_not_migrated(orig):
            raise StorageError(
                "the database has no escrowflow schema yet: run `escrowflow migrate`",
                code="not_migrated",
            ) from exc
        if driver.is_unopenable(orig):
            raise StorageError(
                "cannot open the SQLite database file: check that its directory exists and "
                "is writable, or set ESCROWFLOW_DATABASE_URL",
                code="database_unreachable",
            ) from exc
        raise _unavailable(exc) from exc
    except sa.exc.DBAPIError as exc:
        raise _unavailable(exc) from exc


def one_writer(engine: Engine) -> bool:
    """Whether the database takes one writer at a time (SQLite), so that writers of one
    process wait their turn (`Adapter.write_turn`)."""
    return not adapter_of(engine).locks_rows


def whereabouts(engine: Engine) -> dict[str, Any]:
    """Which server the engine's connections reach now: its host and, on PostgreSQL, its
    timeline (a promoted standby starts a new one: how an operator sees a switch)."""
    with translated_errors(), engine.connect() as conn:
        return adapter_of(conn).whereabouts(conn)


def id_in(
    conn: Connection, column: sa.ColumnElement[int], ids: Sequence[int]
) -> sa.ColumnElement[bool]:
    """`column IN ids`, as each database takes a list best (an array on PostgreSQL)."""
    return adapter_of(conn).id_in(column, ids)


def claim(
    conn: Connection,
    query: sa.Select[Any],
    table: sa.Table,
    owner: str,
    until: datetime,
    *,
    rechecked: bool = False,
) -> list[sa.Row[Any]]:
    """The rows of `query` (which selects `table.c.id`), leased to `owner` until `until`;
    on PostgreSQL rows another worker is claiming right now are skipped. `rechecked`:
    the work re-checks each row in its own write transaction (see `Adapter.claim`)."""
    lease = {"claimed_by": owner, "claim_expires_at": until}
    return adapter_of(conn).claim(conn, query, table, lease, rechecked)


def unclaimed(table: sa.Table, now: datetime) -> sa.ColumnElement[bool]:
    """No worker holds a live lease on the row (none, or it ran out: a crashed worker)."""
    c = table.c
    return sa.or_(c.claim_expires_at.is_(None), c.claim_expires_at < now)


@contextmanager
def snapshot(engine: Engine) -> Iterator[Connection]:
    """A read-only connection whose every statement sees the same committed moment, for
    a page assembled from several reads (a contract and its milestones agree)."""
    with translated_errors(), engine.connect() as conn:
        conn = conn.execution_options(**adapter_of(conn).snapshot_options)
        with conn.begin():
            yield conn


@contextmanager
def transaction(engine: Engine, *, pipelined: bool = False) -> Iterator[Connection]:
    """One write transaction: committed if the block succeeds, rolled back if it raises.

    `pipelined`, on PostgreSQL: in psycopg's pipeline mode, statements are sent without
    waiting for their answers; the client waits where it reads a result and at commit.
    A transition's writes then cost no round trip each. The server still runs them in
    order, and a failing one fails the transaction (its error comes at the next read
    or at commit, still inside this block).
    """
    with translated_errors(), engine.connect() as conn:
        conn = conn.execution_options(**{sqlite.WRITES: True})
        piped = adapter_of(conn).pipeline(conn) if pipelined else _NOTHING
        with adapter_of(conn).write_turn(engine), piped, conn.begin():
            yield conn
