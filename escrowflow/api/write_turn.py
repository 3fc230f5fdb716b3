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

A write in its turn runs on one thread kept for the purpose (a `ThreadPoolExecutor` of
one), handed over by asyncio's `run_in_executor` rather than anyio's worker threads:
anyio's hop (a capacity limiter, a cancel scope, a queue per worker) cost the event
loop's thread 5-8 % of the server's CPU a request (`bench/http.py`, 8 clients, medians
of alternating rounds: 1,322 against 1,218-1,260 us). The request's context variables
(its id, which log lines carry) go with it. Were a request cancelled while its write
runs, the write still ends before the next: there is only the one thread.

When the app builds its engine from its settings (`escrowflow serve`), the writes go
instead to a process of their own (`escrowflow.write_process`), which applies them
in turn (SQLite) or side by side (PostgreSQL); an app given an engine (the tests' own
clocks) keeps the writing thread and the threadpool.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import anyio
from starlette.concurrency import run_in_threadpool as offload

from escrowflow.write_process import WRITES, WriteProcess
from storage.errors import busy_with_writes
from workflows.engine import EscrowEngine


class WriteTurn:
    """The writes in the writing process, if there is one, each refused if it has not
    begun within `timeout` seconds; else one at a time (`one_writer`) on a thread of its
    own, each waiting at most `timeout` seconds for its turn, or straight into the
    threadpool."""

    def __init__(
        self, one_writer: bool, timeout: float, process: WriteProcess | None = None
    ) -> None:
        self._one_writer = one_writer
        self._timeout = timeout
        self._process = process
        self._lock: anyio.Lock | None = None  # made on the event loop, at first use
        self._writer: ThreadPoolExecutor | None = None  # started at the first write

    @property
    def process(self) -> WriteProcess | None:
        """The process the writes go to, if they go to one."""
        return self._process

    async def start(self) -> None:
        """Start the writing process, if the writes go to one (the app's start)."""
        if self._process is not None:
            await self._process.start()

    async def run(self, engine: EscrowEngine, method: str, *args: Any, **kwargs: Any) -> Any:
        """The engine's `method(*args, **kwargs)`, one of `WRITES`, off the event loop,
        in its turn."""
        if method not in WRITES:
            raise ValueError(f"{method} is not one of the engine's writes {sorted(WRITES)}")
        if self._process is not None:
            deadline = time.monotonic() + self._timeout
            return await self._process.call(deadline, method, args, kwargs)
        write = partial(getattr(engine, method), **kwargs)
        if not self._one_writer:
            return await offload(write, *args)
        if self._lock is None:
            self._lock = anyio.Lock()
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="escrowflow-writer")
        writer = self._writer
        with anyio.move_on_after(self._timeout) as waited:
            await self._lock.acquire()
        if waited.cancelled_caught:
            raise busy_with_writes()
        try:
            context = contextvars.copy_context()
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(writer, context.run, write, *args)
        finally:
            self._lock.release()

    async def close(self) -> None:
        """Let the writing process or thread end, once the write in hand is done (the
        app's end)."""
        if self._process is not None:
            await self._process.stop()
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None
