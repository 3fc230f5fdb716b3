"""`escrowflow serve` runs its requests' writes in a process of their own: its
interpreter runs the engine while the API's runs HTTP, on another core.

SQLite takes one writer at a time, so every request's write waits for the one before it,
and with the writes on a thread of the API's process the engine and the event loop
shared one interpreter lock: the loop's reading, routing and answering of the requests
waiting their turn sat in the one-at-a-time section that bounds the throughput
(`bench/http.py`, 8 clients: 0.57-0.68 of the engine called in-process). With the writes
in a process of their own, that section is the engine's alone, as it is in-process. On
PostgreSQL, where writes run side by side on threads, they no longer share the
interpreter with the event loop either.

This module imports no web framework: the writing process loads the engine and what
it needs, not the API.

The API's process (`WriteProcess`) starts the writing process when the app starts, and
sends it each write as a frame over a socket pair: the engine method's name and
arguments, a deadline, and the request's id (which its log lines then carry). The writing
process applies them in the order they came, one at a time on SQLite and side by side
on a pool of `pool_size` threads on PostgreSQL, and answers each. Both ends
are escrowflow: frames are pickles, on a socket pair no other process can reach.

- A write that has not begun by its deadline (`lock_timeout` after the request asked)
  is refused as busy (503 `database_busy`) and writes nothing, as a write waiting on a
  thread would be.
- The writing process builds its engine from the app's settings (the same database,
  policy and clocks). Errors the engine raises reach the request as they were raised;
  any other failure is logged there, with the request's id, and answers 500.
- It ignores SIGINT and SIGTERM, which a terminal or a service manager sends to every
  process of the server: it finishes the write in hand and ends when the API's process
  closes the socket at its shutdown, or dies (the socket then closes too).
- Should it end otherwise, the writes it had been sent answer 503
  `database_unavailable` (one in hand may or may not have been made: a retry with the
  same Idempotency-Key answers it either way), and the next write starts another.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import itertools
import logging
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO

from escrowflow import request_ids
from escrowflow.settings import Settings
from storage.db import one_writer
from storage.errors import EscrowflowError, StorageError, busy_with_writes

WRITES = frozenset({"apply", "create_contract", "add_note"})
"""The engine's methods a request may have the writing process run."""
START_SECONDS = 60.0
"""How long the writing process may take to build its engine before the API gives up."""
STOP_SECONDS = 30.0
"""How long the API's shutdown waits for the writes the process has before killing it."""

_LENGTH = struct.Struct("!I")
_MAIN = "import sys; from escrowflow.write_process import serve; serve(int(sys.argv[1]))"
log = logging.getLogger("escrowflow.api")

# An answer: (call, True, the method's result) or (call, False, a refusal), where a
# refusal is ("error", module, class name, state) for an EscrowflowError or ("failed", text).
Answer = tuple[int, bool, Any]


class WriteProcess:
    """The API's end: starts the writing process, sends it writes, and hands each answer
    to the request waiting for it."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._channel: _Channel | None = None
        self._starting: asyncio.Lock | None = None  # made on the event loop

    @property
    def pid(self) -> int | None:
        """The writing process's id, while it runs."""
        channel = self._channel
        return channel.pid if channel is not None and channel.alive else None

    async def start(self) -> None:
        """Start the writing process, unless it runs; StorageError if it cannot."""
        await self._running()

    async def call(
        self, deadline: float, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """The engine's `method(*args, **kwargs)`, run by the writing process unless
        `deadline` (`time.monotonic()`) passes before it begins."""
        channel = await self._running()
        return await channel.call(deadline, method, args, kwargs)

    async def stop(self) -> None:
        """Let the writing process finish the write in hand and end."""
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def _running(self) -> _Channel:
        channel = self._channel
        if channel is not None and channel.alive:
            return channel
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._channel is None or not self._channel.alive:
                self._channel = await _Channel.open(self._settings)
            return self._channel


class _Channel:
    """One writing process and the socket to it."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.pid = process.pid
        self.alive = True
        self._closing = False
        self._process, self._reader, self._writer = process, reader, writer
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._calls = itertools.count()
        self._answers = asyncio.get_running_loop().create_task(self._answer())

    @classmethod
    async def open(cls, settings: Settings) -> _Channel:
        ours, theirs = socket.socketpair()
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", _MAIN, str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        reader, writer = await asyncio.open_connection(sock=ours)
        writer.write(_frame(settings))
        try:
            async with asyncio.timeout(START_SECONDS):
                ready: Answer = pickle.loads(await _read(reader))
        except (TimeoutError, asyncio.IncompleteReadError, OSError):
            process.kill()
            writer.close()
            status = await asyncio.to_thread(process.wait)
            raise StorageError(
                f"the process that writes to the database did not start (exit status "
                f"{status}; it may take {START_SECONDS:.0f} s): see its log lines",
                code="database_unavailable",
            ) from None
        if not ready[1]:  # its engine refused to start: the reason, as raised there
            writer.close()
            await asyncio.to_thread(process.wait)
            raise _rebuilt(ready[2])
        log.info(
            "writing process started",
            extra={"fields": {"event": "write_process_started", "pid": process.pid}},
        )
        return cls(process, reader, writer)

    async def call(
        self, deadline: float, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        call = next(self._calls)
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[call] = answer
        frame = (call, deadline, request_ids.CURRENT.get(), method, args, kwargs)
        self._writer.write(_frame(frame))
        return await answer

    async def close(self) -> None:
        """Tell the process the writes have ended; it answers those it has, and ends."""
        self._closing = True
        if self.alive:
            self._writer.write_eof()
        try:  # the answers' task ends once the process has ended
            await asyncio.wait_for(asyncio.shield(self._answers), STOP_SECONDS)
        except TimeoutError:
            log.error(
                "the writing process did not end: killed",
                extra={"fields": {"event": "write_process_killed", "pid": self.pid}},
            )
            self._process.kill()
            await self._answers

    async def _answer(self) -> None:
        """Hand each answer to its request; when the process ends, fail those left."""
        try:
            while True:
                call, ok, value = pickle.loads(await _read(self._reader))
                answer = self._waiting.pop(call, None)
                if answer is None or answer.done():  # its request went away
                    continue
                if ok:
                    answer.set_result(value)
                else:
                    answer.set_exception(_rebuilt(value))
        except (asyncio.IncompleteReadError, OSError):
            pass
        except Exception:  # an answer that cannot be read: no later one can be trusted
            log.exception(
                "an answer of the writing process could not be read: it is stopped",
                extra={"fields": {"event": "write_process_unreadable", "pid": self.pid}},
            )
            self._process.kill()
        self.alive = False
        self._writer.close()
        status = await asyncio.to_thread(self._process.wait)
        if self._waiting or not self._closing:
            log.error(
                "the writing process ended with writes in hand"
                if self._waiting
                else "the writing process ended: the next write starts another",
                extra={
                    "fields": {
                        "event": "write_process_ended",
                        "pid": self.pid,
                        "status": status,
                        "writes": len(self._waiting),
                    }
                },
            )
        for answer in self._waiting.values():
            if not answer.done():
                answer.set_exception(_ended(status))
        self._waiting.clear()


def _ended(status: int) -> StorageError:
    return StorageError(
        f"the process writing to the database ended (exit status {status}): a write it had "
        "in hand may or may not have been made; retry with the same Idempotency-Key",
        code="database_unavailable",
    )


def _frame(value: Any) -> bytes:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


async def _read(reader: asyncio.StreamReader) -> bytes:
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    return await reader.readexactly(length)


def _portable(exc: BaseException) -> tuple[str, ...] | tuple[str, str, str, dict[str, Any]]:
    """A refusal for the API's process: an EscrowflowError as itself, else its text."""
    if isinstance(exc, EscrowflowError):
        kind = type(exc)
        return ("error", kind.__module__, kind.__qualname__, dict(vars(exc)))
    return ("failed", f"{type(exc).__name__}: {exc}")


def _rebuilt(refusal: tuple[Any, ...]) -> Exception:
    """The exception a refusal stands for, raised in the API's process."""
    text = refusal[-1]
    if refusal[0] == "error":
        _, module, name, state = refusal
        kind: Any = None
        with contextlib.suppress(ImportError, AttributeError):
            kind = importlib.import_module(module)
            for part in name.split("."):
                kind = getattr(kind, part)
        if isinstance(kind, type) and issubclass(kind, EscrowflowError):
            exc = kind.__new__(kind)
            Exception.__init__(exc, state.get("message", ""))
            vars(exc).update(state)
            return exc
        text = f"{module}.{name}: {state.get('message', '')}"
    return RuntimeError(f"the write failed in the writing process: {text}")


# The writing process.


def serve(fd: int) -> None:
    """The writing process: build the engine from the settings sent first on the socket
    `fd`, then apply the writes it sends until it closes."""
    for signum in (signal.SIGINT, signal.SIGTERM):  # the API's process says when to end
        signal.signal(signum, signal.SIG_IGN)
    connection = socket.socket(fileno=fd)
    incoming = connection.makefile("rb")
    settings = _next(incoming)
    if not isinstance(settings, Settings):
        return
    from escrowflow.logs import log_json_lines

    log_json_lines()
    try:
        engine = settings.engine()
    except EscrowflowError as exc:
        connection.sendall(_frame((0, False, _portable(exc))))
        return
    writes: dict[str, Callable[..., Any]] = {name: getattr(engine, name) for name in WRITES}
    gc.collect()
    gc.freeze()  # built once, kept for the process's life (as `escrowflow serve` does)
    connection.sendall(_frame((0, True, os.getpid())))
    # One write at a time where the database takes one writer (SQLite); else as many at
    # once as the process keeps connections, as the engine's callers in one process do.
    side_by_side = None if one_writer(engine.db) else ThreadPoolExecutor(settings.pool_size)
    sending = threading.Lock()

    def answer(frame: tuple[Any, ...]) -> None:
        try:
            answered = _frame(_applied(writes, *frame))
        except Exception as exc:  # an answer that does not pickle: say so, not nothing
            log.exception("write answer failed", extra={"fields": {"event": "write_failed"}})
            answered = _frame((frame[0], False, _portable(exc)))
        with sending, contextlib.suppress(OSError):  # OSError: the API's process is gone
            connection.sendall(answered)

    try:
        while (frame := _next(incoming)) is not None:
            if side_by_side is None:
                answer(frame)
            else:
                side_by_side.submit(answer, frame)
    finally:
        if side_by_side is not None:
            side_by_side.shutdown(wait=True)
        engine.db.dispose()


def _applied(
    writes: dict[str, Callable[..., Any]],
    call: int,
    deadline: float,
    request_id: str | None,
    method: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Answer:
    token = request_ids.CURRENT.set(request_id)
    try:
        if time.monotonic() > deadline:
            raise busy_with_writes()
        return (call, True, writes[method](*args, **kwargs))
    except EscrowflowError as exc:
        return (call, False, _portable(exc))
    except Exception as exc:
        log.exception("write failed", extra={"fields": {"event": "write_failed", "method": method}})
        return (call, False, _portable(exc))
    finally:
        request_ids.CURRENT.reset(token)


def _next(incoming: BinaryIO) -> Any:
    head = incoming.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack(head)
    return pickle.loads(incoming.read(length))
