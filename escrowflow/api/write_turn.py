"""A request's write waits for its turn on the event loop, not in a thread, where the
database takes one writer at a time (SQLite).

There the engine's writers take turns on a lock of their own (`storage/sqlite.py`), so
eight requests writing at once were eight threads queued on that lock, and the threads
and the event loop passed the interpreter's lock between them at every step: with eight
clients the server spent 1.9 ms of CPU a request instead of 1.3 (`bench/http.py`). Here
the others wait as coroutines, and one thread at a time writes. The wait is bounded as
the lock's is (`lock_timeout`): past it, 503 `database_busy`. Where the database locks
rows (PostgreSQL) writes go to the threadpool at once, as before.

For writes of one transaction (an event, an offer, a note); a long job of many
transactions (a terms migration, a bulk action) takes the engine's turn for each of
them instead, so that requests can write in between.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import anyio
from starlette.concurrency import run_in_threadpool as offload

from storage.errors import busy_with_writes

T = TypeVar("T")


class WriteTurn:
    """One write at a time into the threadpool (`one_writer`), each waiting at most
    `timeout` seconds for its turn; or no waiting at all."""

    def __init__(self, one_writer: bool, timeout: float) -> None:
        self._one_writer = one_writer
        self._timeout = timeout
        self._lock: anyio.Lock | None = None  # made on the event loop, at first use

    async def run(self, write: Callable[..., T], *args: Any) -> T:
        """`write(*args)` in the threadpool, in its turn."""
        if not self._one_writer:
            return await offload(write, *args)
        if self._lock is None:
            self._lock = anyio.Lock()
        with anyio.move_on_after(self._timeout) as waited:
            await self._lock.acquire()
        if waited.cancelled_caught:
            raise busy_with_writes()
        try:
            return await offload(write, *args)
        finally:
            self._lock.release()
