"""Database engines and transactions, with driver errors translated once, here.

`make_engine(settings)` is the only way to get an engine: nothing connects at import.
SQLite runs in WAL mode with foreign keys on, and every write transaction
(`transaction()`) starts with `BEGIN IMMEDIATE` so that a writer holds the lock from its
first read (no upgrade deadlocks between two writers); reads start a plain `BEGIN`.
PostgreSQL runs at READ COMMITTED; the engine above serialises work on a contract with
`SELECT ... FOR UPDATE` on the contract row.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection, Engine

from storage.errors import (
    ConcurrentChange,
    ConflictError,
    StorageBusy,
    StorageError,
    ValidationError,
)

_SYNCHRONOUS = {"OFF", "NORMAL", "FULL", "EXTRA"}


# SQLite has one writer at a time. Threads of one process wait for it here, in turn,
# rather than in SQLite's busy handler, which sleeps and polls (1, 2, 5 ... 100 ms).
class _WriterTurn:
    """A process's writers take turns here, each waiting at most `timeout` seconds."""

    def __init__(self, timeout: float) -> None:
        self._lock = threading.RLock()
        self._timeout = timeout

    def __enter__(self) -> None:
        if not self._lock.acquire(timeout=self._timeout):
            raise StorageBusy(
                "the database is busy with other writes: try again in a moment",
                code="database_busy",
                details={"retry_after_seconds": 1},
            )

    def __exit__(self, *_exc: object) -> None:
        self._lock.release()


_WRITERS: weakref.WeakKeyDictionary[Engine, _WriterTurn] = weakref.WeakKeyDictionary()
_NO_LOCK: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
_WRITES = "escrowflow_writes"


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


def make_engine(
    settings: DatabaseSettings,
    *,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT_SECONDS,
    **engine_kwargs: Any,
) -> Engine:
    """Build the engine for `settings.database_url` (SQLite file or PostgreSQL).

    Every wait is bounded: a lock held elsewhere for longer than `lock_timeout` seconds,
    or no free pooled connection within the pool timeout, is `StorageBusy`."""
    url = sa.make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        return _make_sqlite_engine(url, settings.sqlite_synchronous, lock_timeout, **engine_kwargs)
    if url.get_backend_name() == "postgresql":
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        engine_kwargs.setdefault("pool_timeout", DEFAULT_POOL_TIMEOUT_SECONDS)
        options = f"-c lock_timeout={int(lock_timeout * 1000)}"
        connect_args = {"options": options, **engine_kwargs.pop("connect_args", {})}
        engine = sa.create_engine(url, connect_args=connect_args, **engine_kwargs)
        return _pipelines(_ping_when_idle(engine))
    raise ValidationError(
        f"unsupported database URL {settings.database_url!r}: "
        "use sqlite:///path/to/file.db or postgresql://user@host/dbname",
        code="unsupported_database",
    )


# A pooled connection idle this long is checked before use (the server may have restarted
# meanwhile). Busy connections are not: a ping per checkout is a round trip per
# transition (~150 us here). A connection that died while busy fails its one
# transaction, and SQLAlchemy then replaces every connection of the pool.
PING_AFTER_IDLE_SECONDS = 10.0


def _ping_when_idle(engine: Engine) -> Engine:
    """SQLAlchemy's pessimistic disconnect handling, for idle connections only."""

    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:  # the pool connects afresh
            raise sa.exc.DisconnectionError() from exc

    return engine


_PIPELINE = "escrowflow_pipeline"


def _pipelines(engine: Engine) -> Engine:
    """In a pipelined transaction, a statement run by SQLAlchemy (not the engine's hot
    path) waits for its answer: SQLAlchemy reads a result's columns as soon as the
    statement is sent, and in a pipeline they come only when the client syncs."""

    @event.listens_for(engine, "after_cursor_execute")
    def _answer_now(conn: Connection, *_args: Any) -> None:
        pipeline = conn.info.get(_PIPELINE)
        if pipeline is not None:
            pipeline.sync()

    return engine


def _make_sqlite_engine(
    url: sa.URL, synchronous: str, lock_timeout: float, **engine_kwargs: Any
) -> Engine:
    synchronous = synchronous.upper()
    if synchronous not in _SYNCHRONOUS:
        raise ValidationError(
            f"ESCROWFLOW_SQLITE_SYNCHRONOUS={synchronous!r} is not one of "
            f"{', '.join(sorted(_SYNCHRONOUS))}",
            code="invalid_setting",
        )
    if url.database in (None, "", ":memory:"):
        raise ValidationError(
            "escrowflow needs a SQLite file, not an in-memory database: "
            "use sqlite:///escrowflow.db",
            code="unsupported_database",
        )
    engine = sa.create_engine(
        url, connect_args={"timeout": lock_timeout, "check_same_thread": False}, **engine_kwargs
    )

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event, below, issue the BEGIN itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(lock_timeout * 1000)}")
        cursor.close()

    _WRITERS[engine] = _WriterTurn(lock_timeout)

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # A writer takes the lock before its first read (no upgrade deadlock between two
        # writers); a reader does not, so in WAL mode it never waits for a writer.
        writes = conn.get_execution_options().get(_WRITES, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")

    return engine


def is_postgresql(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "postgresql"


_CONSTRAINT = re.compile(r"(ck_[a-z_]+|uq_[a-z_]+)")
_log = logging.getLogger("escrowflow.storage")
# SQLSTATEs that mean "wait and try again": lock_not_available (a lock_timeout ran out),
# serialization_failure, deadlock_detected.
_BUSY_STATES = {"55P03", "40001", "40P01"}


_UNIQUE_VIOLATION = "23505"


def _sqlstate(exc: sa.exc.DBAPIError) -> str | None:
    """PostgreSQL's SQLSTATE of a driver error (SQLite's driver has none)."""
    return getattr(exc.orig, "sqlstate", None)


def _constraint_of(exc: sa.exc.DBAPIError) -> str:
    """The constraint a refused write broke: psycopg names it (`diag.constraint_name`);
    SQLite only says it in its message (our constraints are named ck_... and uq_...)."""
    named = getattr(getattr(exc.orig, "diag", None), "constraint_name", None)
    if named:
        return str(named)
    found = _CONSTRAINT.search(str(exc.orig))
    return found.group(1) if found else "integrity"


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
        name = _constraint_of(exc)
        if (
            _sqlstate(exc) == _UNIQUE_VIOLATION
            or name.startswith("uq_")
            or ("UNIQUE constraint failed" in str(exc.orig))
        ):
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
        text = str(exc.orig).lower()
        if _sqlstate(exc) in _BUSY_STATES or "database is locked" in text:
            raise StorageBusy(
                "another change holds this contract (or the database) right now: try again "
                "in a moment",
                code="database_busy",
                details={"retry_after_seconds": 1},
            ) from exc
        if "no such table" in text or ("relation" in text and "does not exist" in text):
            raise StorageError(
                "the database has no escrowflow schema yet: run `escrowflow migrate`",
                code="not_migrated",
            ) from exc
        if "unable to open database file" in text:
            raise StorageError(
                "cannot open the SQLite database file: check that its directory exists and "
                "is writable, or set ESCROWFLOW_DATABASE_URL",
                code="database_unreachable",
            ) from exc
        if "deadlock" in text or "could not serialize" in text:
            raise StorageBusy(
                "the database was busy with a concurrent change: try again",
                code="database_busy",
            ) from exc
        raise _unavailable(exc) from exc
    except sa.exc.DBAPIError as exc:
        raise _unavailable(exc) from exc


def unclaimed(table: sa.Table, now: datetime) -> sa.ColumnElement[bool]:
    """No worker holds a live lease on the row (none, or it ran out: a crashed worker)."""
    c = table.c
    return sa.or_(c.claim_expires_at.is_(None), c.claim_expires_at < now)


def id_in(
    conn: Connection, column: sa.ColumnElement[int], ids: Sequence[int]
) -> sa.ColumnElement[bool]:
    """`column IN ids`; on PostgreSQL `column = ANY(:ids)`, one array parameter however
    many ids, so a batch's statement text is the same every time (no 500-parameter
    text for the driver to build and the server to parse and plan, each batch)."""
    if is_postgresql(conn):
        return column == sa.any_(sa.bindparam("ids", list(ids), type_=ARRAY(sa.Integer)))
    return column.in_(ids)


def claim(
    conn: Connection, query: sa.Select[Any], table: sa.Table, owner: str, until: datetime
) -> list[sa.Row[Any]]:
    """The rows of `query` (which selects `table.c.id`), leased to `owner` until `until`.

    On PostgreSQL rows another worker is claiming right now are skipped (`FOR UPDATE SKIP
    LOCKED`), so several workers share the work without a leader, and the rows are
    picked, leased and returned by one statement (in no particular order); SQLite has
    one writer.
    """
    lease = {"claimed_by": owner, "claim_expires_at": until}
    if is_postgresql(conn):
        # ARRAY(...) runs the locking pick once, before the update (an InitPlan).
        picked = query.with_only_columns(table.c.id).with_for_update(skip_locked=True)
        statement = (
            table.update()
            .where(table.c.id == sa.any_(sa.func.array(picked.scalar_subquery())))
            .values(lease)
            .returning(*query.selected_columns)
        )
        return list(conn.execute(statement).all())
    rows = list(conn.execute(query).all())
    if rows:
        conn.execute(table.update().where(table.c.id.in_([row.id for row in rows])).values(lease))
    return rows


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
        conn = conn.execution_options(**{_WRITES: True})
        with _WRITERS.get(engine, _NO_LOCK), _pipeline(conn, pipelined), conn.begin():
            yield conn


@contextmanager
def _pipeline(conn: Connection, pipelined: bool) -> Iterator[None]:
    if not pipelined or not is_postgresql(conn):
        yield
        return
    error = conn.dialect.loaded_dbapi.Error
    try:
        with conn.connection.dbapi_connection.pipeline() as pipeline:  # type: ignore[union-attr]
            conn.info[_PIPELINE] = pipeline
            try:
                yield
            finally:
                del conn.info[_PIPELINE]
    except error as exc:  # met at the pipeline's end: SQLAlchemy's, like any other
        raise sa.exc.DBAPIError.instance(None, None, exc, error) from exc
