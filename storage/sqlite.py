"""SQLite: what storage does differently there, and only there (beside `postgresql.py`;
`SQLite` fills `dialect.Adapter`, and `dialect.adapter_of` is the one place that
chooses between the two).

A file in WAL mode with foreign keys on. Every write transaction starts with `BEGIN
IMMEDIATE`, so a writer holds the lock from its first read (no upgrade deadlock between
two writers); reads start a plain `BEGIN` and never wait for a writer. Writers take turns
for the write lock on locks of their own (`WriterTurn`) rather than in SQLite's busy
handler, which sleeps and polls (1, 2, 5 ... 100 ms): the threads of one process on a
lock in memory, then the processes on one file on `<file>.write-lock` (`FileTurn`, which
the kernel hands on at once and lets go when its holder dies). Every wait is bounded by
the lock timeout. A claim reads, then leases: there is one writer.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, Engine

from storage.errors import (
    ConflictError,
    StorageError,
    ValidationError,
    busy_with_writes,
)

SYNCHRONOUS = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})
WRITES = "escrowflow_writes"
"""The execution option of a write transaction's connection (`db.transaction`)."""


KEEPER_IDLE_SECONDS = 5.0
"""A `FileTurn`'s keeper thread ends after waiting this long for a writer (the next
writer that has to wait starts another)."""


class FileTurn:
    """The processes writing to one SQLite file take turns on `<file>.write-lock`, an
    exclusive `flock`: the kernel queues the waiting processes, wakes one the moment the
    turn is let go, and lets it go itself when the process holding it dies, however it
    dies. Before the lock a process passes `<file>.write-gate`, which a process waiting
    for the lock holds: a process that has just let the lock go cannot take it straight
    back while another waits, so the processes take it in turn.

    A lock the kernel queues cannot be waited for with a time limit, so a writer that
    finds the turn taken waits for a keeper thread (one per process and file) that waits
    for the lock on its behalf, and gives up after its time; a turn the keeper gets for a
    writer that gave up, it lets go at once. A process's threads take turns before this
    (`WriterTurn`): one of them at a time waits here. An instance stands for one open
    file: two engines on one file in one process take turns as two processes do."""

    def __init__(self, database: str) -> None:
        self._paths = (f"{database}.write-lock", f"{database}.write-gate")
        self._fds: tuple[int, int] | None = None  # opened at the first write
        self._cv = threading.Condition()
        self._wanted = False  # a writer waits for the keeper
        self._granted = False  # the keeper got the lock for it
        self._keeping = False  # the keeper waits in the kernel for the lock
        self._keeper: threading.Thread | None = None

    def take(self, timeout: float) -> bool:
        """Whether this process got the turn within `timeout` seconds."""
        with self._cv:
            lock, gate = self._opened()
            if not self._keeping and _try(gate):
                try:
                    if _try(lock):
                        return True
                finally:
                    fcntl.flock(gate, fcntl.LOCK_UN)
            self._wanted, self._granted = True, False
            if self._keeper is None:
                self._keeper = threading.Thread(
                    target=self._keep, name="escrowflow-write-turn", daemon=True
                )
                self._keeper.start()
            self._cv.notify_all()
            got = self._cv.wait_for(lambda: self._granted, timeout)
            self._wanted = self._granted = False
            return got

    def give(self) -> None:
        """Let the turn go."""
        assert self._fds is not None
        fcntl.flock(self._fds[0], fcntl.LOCK_UN)

    def _opened(self) -> tuple[int, int]:
        if self._fds is None:
            fds = [self._open(path) for path in self._paths]
            self._fds = (fds[0], fds[1])
        return self._fds

    def _open(self, path: str) -> int:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageError(
                f"cannot open {path} ({exc.strerror}): the processes writing to a SQLite "
                "file take turns on it, so the file's directory must be writable",
                code="database_unavailable",
            ) from None
        weakref.finalize(self, os.close, fd)
        return fd

    def _keep(self) -> None:
        lock, gate = self._opened()
        while True:
            with self._cv:
                waiting = self._cv.wait_for(
                    lambda: self._wanted and not self._granted, KEEPER_IDLE_SECONDS
                )
                if not waiting:
                    self._keeper = None
                    return
                self._keeping = True
            fcntl.flock(gate, fcntl.LOCK_EX)
            fcntl.flock(lock, fcntl.LOCK_EX)
            fcntl.flock(gate, fcntl.LOCK_UN)
            with self._cv:
                self._keeping = False
                if self._wanted:
                    self._granted = True
                    self._cv.notify_all()
                else:  # the writer gave up meanwhile
                    fcntl.flock(lock, fcntl.LOCK_UN)


def _try(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class WriterTurn:
    """A writer's turn on one file: first among its process's threads, then among the
    processes (`FileTurn`); it waits at most `timeout` seconds for both together."""

    def __init__(self, timeout: float, database: str) -> None:
        self._lock = threading.RLock()
        self._timeout = timeout
        self._file = FileTurn(database)
        self._depth = 0  # a writer's nested transactions take the file's turn once

    def __enter__(self) -> None:
        deadline = time.monotonic() + self._timeout
        if not self._lock.acquire(timeout=self._timeout):
            raise busy_with_writes()
        if self._depth == 0:
            try:
                if not self._file.take(max(0.0, deadline - time.monotonic())):
                    raise busy_with_writes()
            except BaseException:
                self._lock.release()
                raise
        self._depth += 1

    def __exit__(self, *_exc: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._file.give()
        self._lock.release()


TURNS: weakref.WeakKeyDictionary[Engine, WriterTurn] = weakref.WeakKeyDictionary()
"""Each SQLite engine's writer turn."""


def make(url: sa.URL, synchronous: str, lock_timeout: float, **engine_kwargs: Any) -> Engine:
    """An engine on a SQLite file; writers wait at most `lock_timeout` seconds."""
    synchronous = synchronous.upper()
    if synchronous not in SYNCHRONOUS:
        raise ValidationError(
            f"ESCROWFLOW_SQLITE_SYNCHRONOUS={synchronous!r} is not one of "
            f"{', '.join(sorted(SYNCHRONOUS))}",
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

    TURNS[engine] = WriterTurn(lock_timeout, str(Path(url.database).resolve()))

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # A writer takes the lock before its first read (no upgrade deadlock between two
        # writers); a reader does not, so in WAL mode it never waits for a writer.
        writes = conn.get_execution_options().get(WRITES, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")

    return engine


@contextmanager
def _sole_worker(database: Path) -> Iterator[None]:
    """An exclusive lock on `<file>.worker-lock` while this process runs the worker. The
    kernel lets it go when the process ends, however it ends (kill -9 included)."""
    with open(f"{database}.worker-lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConflictError(
                f"another process already runs the worker on {database} (SQLite takes one): "
                "stop it, add API-only nodes with `serve --no-worker`, or use PostgreSQL",
                code="database_in_use",
            ) from None
        yield


def id_in(column: sa.ColumnElement[int], ids: Sequence[int]) -> sa.ColumnElement[bool]:
    return column.in_(ids)


class _IdList(sa.types.TypeDecorator[list[int]]):
    """A list of ints as one parameter: its JSON text, which `json_each` reads back."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> str:
        return json.dumps([int(i) for i in value])


def in_ids(column: sa.ColumnElement[int]) -> sa.ColumnElement[bool]:
    """`column IN (SELECT value FROM json_each(:ids))`: one parameter for any number."""
    listed: sa.Select[Any] = sa.select(sa.literal_column("value")).select_from(
        sa.func.json_each(sa.bindparam("ids", type_=_IdList()))
    )
    return column.in_(listed.scalar_subquery())


def claim(
    conn: Connection,
    query: sa.Select[Any],
    table: sa.Table,
    lease: dict[str, Any],
    rechecked: bool,
) -> list[sa.Row[Any]]:
    """The rows of `query`, given `lease`: read, then leased (the transaction holds the
    one write lock, so nobody claims them in between). Rows whose work re-checks them in
    a write transaction (`rechecked`: a deadline fires only if still pending, under the
    one write lock) are only read: a lease would keep nobody out, and writing it cost a
    second commit (an fsync) a batch."""
    rows = list(conn.execute(query).all())
    if rows and not rechecked:
        conn.execute(table.update().where(table.c.id.in_([row.id for row in rows])).values(lease))
    return rows


# SQLite names a broken constraint only in its message (ours are named ck_... and uq_...).
_CONSTRAINT = re.compile(r"(ck_[a-z_]+|uq_[a-z_]+)")


class SQLite:
    """`storage.dialect.Adapter` on a SQLite file (the standard library's driver)."""

    name = "sqlite"
    locks_rows = False
    takes_ids_ahead = False
    returns_ids = False
    unnests = False
    shares_clock = False
    stores_naive_utc = True
    alters_by_copy = True
    snapshot_options: dict[str, Any] = {}  # WAL: a read transaction is a snapshot

    def make(
        self,
        url: sa.URL,
        lock_timeout: float,
        *,
        synchronous: str,
        create: bool,
        **engine_kwargs: Any,
    ) -> Engine:
        if not create and not Path(str(url.database)).exists():
            raise StorageError(
                f"no database at {self.shown(url)}: run `escrowflow "
                "migrate` to create it, or set ESCROWFLOW_DATABASE_URL to the one in use",
                code="not_migrated",
            )
        return make(url, synchronous, lock_timeout, **engine_kwargs)

    def url(self, text: str) -> sa.URL:
        return sa.make_url(text)

    def whereabouts(self, conn: Connection) -> dict[str, Any]:
        return {"file": self.shown(conn.engine.url)}

    def shown(self, url: sa.URL) -> str:
        return str(Path(str(url.database)).resolve())

    def sole_worker(self, url: sa.URL) -> AbstractContextManager[None]:
        return _sole_worker(Path(self.shown(url)))

    def write_turn(self, engine: Engine) -> AbstractContextManager[None]:
        return TURNS.get(engine) or nullcontext()

    id_in = staticmethod(id_in)
    in_ids = staticmethod(in_ids)
    claim = staticmethod(claim)

    def pipeline(self, conn: Connection) -> AbstractContextManager[None]:
        return nullcontext()

    def insert(self, table: sa.Table) -> Any:
        return sqlite_dialect.insert(table)

    def utc_day(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        # UTC text: its first ten characters are the day.
        return sa.func.substr(column, 1, 10)

    def index_condition(self, column: sa.ColumnElement[Any], value: str) -> sa.ColumnElement[bool]:
        # Written out as the index's condition is, SQLite reads a covering partial index
        # and not the table (for a bound value, it would not).
        quoted = value.replace("'", "''")
        return column.in_([sa.literal_column(f"'{quoted}'")])

    def owns(self, error: BaseException) -> bool:
        return isinstance(error, sqlite3.Error)

    def constraint_of(self, error: BaseException) -> str | None:
        found = _CONSTRAINT.search(str(error))
        return found.group(1) if found else None

    def is_unique_violation(self, error: BaseException) -> bool:
        return "UNIQUE constraint failed" in str(error)

    def is_busy(self, error: BaseException) -> bool:
        return "database is locked" in str(error).lower()

    def is_not_migrated(self, error: BaseException) -> bool:
        return "no such table" in str(error).lower()

    def is_unopenable(self, error: BaseException) -> bool:
        return "unable to open database file" in str(error).lower()
