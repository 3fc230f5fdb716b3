"""Where the database takes one writer at a time (SQLite), a request's write waits for its
turn on the event loop, at most the lock timeout, then 503 `database_busy`; where it
locks rows, writes run side by side."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, cast

import anyio
import pytest

from escrowflow import request_ids
from escrowflow.api.write_turn import WriteTurn
from storage.errors import StorageBusy
from workflows.engine import EscrowEngine

BOUND = 5.0  # no test waits this long unless the behaviour under test is broken


class _Engine:
    """Stands for the engine: its write `apply` runs the function it is given."""

    def apply(self, write: Callable[..., Any], *args: Any) -> Any:
        return write(*args)


ENGINE = cast(EscrowEngine, _Engine())


def _two_at_once(turn: WriteTurn, wait: float = BOUND) -> list[str]:
    """Two writes started together; each waits up to `wait` for the other to be running."""
    both = threading.Barrier(2, timeout=wait)
    seen: list[str] = []

    def write(name: str) -> str:
        try:
            both.wait()
            seen.append(f"{name} beside the other")
        except threading.BrokenBarrierError:
            seen.append(f"{name} alone")
        return name

    async def main() -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(turn.run, ENGINE, "apply", write, "a")
            tasks.start_soon(turn.run, ENGINE, "apply", write, "b")

    anyio.run(main)
    return sorted(seen)


def test_where_rows_are_locked_writes_run_side_by_side() -> None:
    assert _two_at_once(WriteTurn(one_writer=False, timeout=BOUND)) == [
        "a beside the other",
        "b beside the other",
    ]


def test_with_one_writer_a_write_waits_for_the_one_in_its_turn() -> None:
    # The first write holds the turn until it gives up waiting for the second: the
    # second only runs after it, alone.
    assert _two_at_once(WriteTurn(one_writer=True, timeout=BOUND), wait=0.2) == [
        "a alone",
        "b alone",
    ]


def test_a_write_that_waits_past_the_lock_timeout_is_refused_as_busy() -> None:
    turn = WriteTurn(one_writer=True, timeout=0.05)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        holding.set()
        release.wait(BOUND)

    async def main() -> StorageBusy:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(turn.run, ENGINE, "apply", hold)
            await anyio.to_thread.run_sync(holding.wait, BOUND)
            with pytest.raises(StorageBusy) as refused:
                await turn.run(ENGINE, "apply", lambda: None)
            release.set()
        assert await turn.run(ENGINE, "apply", lambda: "after") == "after"  # the turn is free again
        return refused.value

    refused = anyio.run(main)
    assert refused.code == "database_busy" and "busy with other writes" in refused.message


def test_a_write_in_its_turn_runs_in_the_requests_context_on_the_writing_thread() -> None:
    """The request's id goes with its write, so the log lines the write makes name it;
    every write runs on the one thread, and `close` lets it end."""
    turn = WriteTurn(one_writer=True, timeout=BOUND)

    def seen() -> tuple[str | None, threading.Thread]:
        return request_ids.CURRENT.get(), threading.current_thread()

    async def request(request_id: str) -> tuple[str | None, threading.Thread]:
        request_ids.CURRENT.set(request_id)
        return await turn.run(ENGINE, "apply", seen)

    async def main() -> list[tuple[str | None, threading.Thread]]:
        return [await request("req-1"), await request("req-2")]

    (first, thread), (second, again) = anyio.run(main)
    assert (first, second) == ("req-1", "req-2")
    assert thread is again and thread.name.startswith("escrowflow-writer")
    assert thread is not threading.main_thread()
    anyio.run(turn.close)
    assert not thread.is_alive()


def test_only_the_engines_writes_are_run_in_a_turn() -> None:
    turn = WriteTurn(one_writer=True, timeout=BOUND)
    with pytest.raises(ValueError, match="dispose is not one of the engine's writes"):
        anyio.run(turn.run, ENGINE, "dispose")
