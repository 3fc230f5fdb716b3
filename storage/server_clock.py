"""The database server's clock: the one clock of a deployment on PostgreSQL (DL2).

Every "now" that stamps a transition, sets a due date, claims a deadline, takes a lease
or judges a heartbeat comes from here, for the API, the CLI and the workers alike, so
no host's own clock (broken NTP, a resumed VM) can make money move early or late.

The server's `clock_timestamp()` is read at most once a second (`RESYNC_SECONDS`) on a
connection of its own, and carried forward between reads by the process's monotonic
clock, which no wall-clock step moves. The anchor is the server's time as it was when
its answer arrived, so the carried time lags the server by the round trip and never
runs ahead of it (a deadline may fire a fraction of a millisecond late, never early).
If the server cannot be read, the last anchor is carried forward; with no anchor yet,
`now()` raises `StorageError`.

The same read measures this process's own clock against the server's (`skew`).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from storage.dialect import adapter_of
from storage.errors import StorageError

RESYNC_SECONDS = 1.0
"""How long the server's time is carried forward on the monotonic clock before a re-read."""
CONNECT_TIMEOUT_SECONDS = 2
"""How long a re-read waits for a connection to the server."""

_log = logging.getLogger("escrowflow.clock")


class _Clock(Protocol):
    def now(self) -> datetime: ...


def server_clock(db: Engine, process: _Clock) -> ServerClock | None:
    """The database server's clock where processes on several hosts share one server
    (PostgreSQL); None where the database is a file on one host (SQLite: its clock is
    the host's)."""
    return ServerClock(db, process) if adapter_of(db).shares_clock else None


class ServerClock:
    """`now()` on the database server's clock; `measure_skew()` against `process`."""

    def __init__(self, db: Engine, process: _Clock, resync: float = RESYNC_SECONDS) -> None:
        # Its own connection, so reading the time never waits for the request pool.
        self._db = sa.create_engine(
            db.url,
            pool_size=1,
            max_overflow=0,
            pool_timeout=CONNECT_TIMEOUT_SECONDS,
            pool_pre_ping=True,
            connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
        )
        self._process = process
        self._resync = resync
        self._lock = threading.Lock()
        self._anchor: datetime | None = None
        self._anchored_at = 0.0  # time.monotonic() when the anchor's answer arrived
        self._next_read = 0.0
        self.skew: timedelta | None = None

    def now(self) -> datetime:
        with self._lock:
            if self._anchor is None or time.monotonic() >= self._next_read:
                self._read()
            assert self._anchor is not None
            return self._anchor + timedelta(seconds=time.monotonic() - self._anchored_at)

    def measure_skew(self) -> timedelta:
        """Read the server now and say how far this process's clock is from it."""
        with self._lock:
            self._read()
        if self.skew is None:
            raise StorageError(
                "the database server's clock cannot be read: check ESCROWFLOW_DATABASE_URL",
                code="database_unavailable",
            )
        return self.skew

    def _read(self) -> None:
        self._next_read = time.monotonic() + self._resync
        try:
            before = self._process.now()
            with self._db.connect() as conn:
                server = conn.execute(sa.text("SELECT clock_timestamp()")).scalar_one()
            arrived = time.monotonic()
            after = self._process.now()
        except Exception as exc:
            if self._anchor is None:
                raise StorageError(
                    "the database server's clock cannot be read: check that the database "
                    "is up and ESCROWFLOW_DATABASE_URL",
                    code="database_unavailable",
                ) from exc
            _log.warning(
                "clock re-read failed: carrying the last server time forward",
                extra={"fields": {"event": "clock_read_failed", "error": type(exc).__name__}},
            )
            return
        self._anchor = server.astimezone(UTC)
        self._anchored_at = arrived
        self.skew = before + (after - before) / 2 - self._anchor

    def close(self) -> None:
        self._db.dispose()
