"""On SQLite, an app built from its settings (`escrowflow serve`) has the engine's writes
for requests run in a process of their own (`escrowflow/write_process.py`): the
answers are the writing thread's, refusals included; a write that has not begun by its
deadline is refused as busy and writes nothing; a failure there is logged with the
request's id; the process ignores SIGTERM and ends with the app; killed, the writes it
had answer 503 `database_unavailable` and the next write starts another."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from escrowflow import request_ids, tokens
from escrowflow.api import create_app
from escrowflow.settings import Settings
from escrowflow.write_process import WriteProcess, _portable, _rebuilt
from storage.db import make_engine
from storage.dialect import adapter_of
from storage.errors import StorageBusy, StorageError
from storage.migrate import upgrade
from tests.live import serving
from tests.served import until
from workflows.actors import Actor

BOUND = 10.0  # no test waits this long unless the behaviour under test is broken
OFFER = {
    "freelancer_id": "ada",
    "title": "site",
    "currency": "USD",
    "milestones": [{"title": "design", "amount": 50_000}],
}


def _settings(path: Path, **more: Any) -> Settings:
    settings = Settings(database_url=f"sqlite:///{path}", sqlite_synchronous="NORMAL", **more)
    db = make_engine(settings, create=True)
    upgrade(db)
    db.dispose()
    return settings


class _Client:
    def __init__(self, url: str, settings: Settings) -> None:
        engine = settings.engine()
        scopes = ["act:client", "act:freelancer"]
        token = tokens.create(engine.db, engine.clock.now(), "web", scopes)["token"]
        engine.db.dispose()
        self.http = httpx.Client(base_url=url, timeout=30)
        self.auth = {"Authorization": f"Bearer {token}"}

    def post(self, path: str, actor: str, body: Any = None, **headers: str) -> httpx.Response:
        headers = {**self.auth, "Escrowflow-Actor": actor, **headers}
        return self.http.post(path, json=body, headers=headers)

    def offer(self) -> httpx.Response:
        return self.post("/v1/contracts", "client:acme", OFFER, **{"Idempotency-Key": "k"})


@contextmanager
def _served(settings: Settings) -> Iterator[tuple[_Client, Any]]:
    app = create_app(settings)
    with serving(app) as url:
        client = _Client(url, settings)
        try:
            yield client, app
        finally:
            client.http.close()
    app.state.engine.db.dispose()


def _contracts(settings: Settings) -> int:
    engine = settings.engine()
    try:
        with engine.db.connect() as conn:
            return int(conn.exec_driver_sql("SELECT count(*) FROM contracts").scalar_one())
    finally:
        engine.db.dispose()


def _parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_requests_writes_run_in_a_process_of_the_servers_own_which_ends_with_it(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path / "w.db")
    with _served(settings) as (client, app):
        process: WriteProcess = app.state.write_turn.process
        pid = process.pid
        assert pid is not None and _parent_of(pid) == os.getpid()
        assert "escrowflow.write_process" in Path(f"/proc/{pid}/cmdline").read_text()
        os.kill(pid, signal.SIGTERM)  # a service manager's, meant for the server
        offered = client.offer()
        assert offered.status_code == 201, offered.text
        replayed = client.offer()  # the same Idempotency-Key: the first answer
        assert replayed.json() == {**offered.json(), "replayed": True}
        assert replayed.headers["Idempotent-Replayed"] == "true"
        assert process.pid == pid  # SIGTERM was not its end
    assert _contracts(settings) == 1
    assert not Path(f"/proc/{pid}").exists()  # ended with the app, and reaped


def test_without_it_no_process_is_started(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "w.db", api_write_process=False)
    with _served(settings) as (client, app):
        assert app.state.write_turn.process is None
        assert client.offer().status_code == 201


def test_the_answers_are_the_writing_threads_refusals_included(tmp_path: Path) -> None:
    """The same requests to an app writing in a process and to one writing on a thread:
    the same statuses and bodies, but for the request ids."""

    def answers(settings: Settings) -> list[tuple[int, Any]]:
        with _served(settings) as (client, _):
            offered = client.offer().json()
            milestone = offered["created"][1]["id"]
            asked = [
                client.offer(),
                client.post(f"/v1/milestones/{milestone}/events/release", "client:acme"),
                client.post(f"/v1/milestones/{milestone}/events/submit", "freelancer:ada"),
                client.post(f"/v1/contracts/{offered['id']}/events/accept", "client:acme"),
                client.post(f"/v1/contracts/{offered['id']}/events/accept", "freelancer:ada"),
                client.post(f"/v1/contracts/{offered['id']}/events/accept", "freelancer:ada"),
                client.post(
                    f"/v1/milestones/{milestone}/events/fund", "client:acme", **{"If-Match": '"1"'}
                ),
            ]
        return [(r.status_code, _without_request_id(r.json())) for r in asked]

    in_process = answers(_settings(tmp_path / "p.db"))
    on_thread = answers(_settings(tmp_path / "t.db", api_write_process=False))
    assert in_process == on_thread
    statuses = [status for status, _ in in_process]
    assert 201 in statuses and 200 in statuses and any(s >= 400 for s in statuses)
    assert len({json.dumps(body, sort_keys=True) for _, body in in_process}) > 3


def _without_request_id(body: Any) -> Any:
    if isinstance(body, dict):
        return {k: _without_request_id(v) for k, v in body.items() if k != "request_id"}
    return body


def test_writes_waiting_past_the_lock_timeout_are_refused_as_busy_and_write_nothing(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path / "w.db", lock_timeout=0.5)
    with _served(settings) as (client, _):
        holder = settings.engine()
        answers: list[httpx.Response] = []
        try:
            with adapter_of(holder.db).write_turn(holder.db):  # this process's turn
                asking = [
                    threading.Thread(target=lambda: answers.append(client.offer()))
                    for _ in range(3)
                ]
                for thread in asking:
                    thread.start()
                for thread in asking:
                    thread.join(BOUND)
        finally:
            holder.db.dispose()
        assert [r.status_code for r in answers] == [503, 503, 503]
        assert {r.json()["code"] for r in answers} == {"database_busy"}
        assert _contracts(settings) == 0
        assert client.offer().status_code == 201  # the turn is free again


def test_a_write_not_begun_by_its_deadline_is_refused_and_a_failure_is_logged_with_the_request(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    settings = _settings(tmp_path / "w.db")
    process = WriteProcess(settings)
    client = Actor.parse("client:acme")

    async def main() -> None:
        await process.start()
        try:
            request_ids.CURRENT.set("req-late")
            with pytest.raises(StorageBusy, match="busy with other writes"):
                await process.call(time.monotonic() - 1, "create_contract", (client, OFFER), {})
            request_ids.CURRENT.set("req-broken")
            with pytest.raises(RuntimeError, match="TypeError"):
                await process.call(time.monotonic() + BOUND, "apply", ("contract",), {})
            done = await process.call(
                time.monotonic() + BOUND, "create_contract", (client, OFFER), {}
            )
            assert (done["entity"], done["event"]) == ("contract", "create")
        finally:
            await process.stop()

    anyio.run(main)
    assert _contracts(settings) == 1  # the late one wrote nothing
    lines = [
        json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")
    ]
    failed = [line for line in lines if line.get("event") == "write_failed"]
    assert len(failed) == 1 and failed[0]["request_id"] == "req-broken", lines


def test_a_killed_writing_process_fails_its_writes_and_the_next_write_starts_another(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="escrowflow.api")
    settings = _settings(tmp_path / "w.db", lock_timeout=BOUND * 3)
    with _served(settings) as (client, app):
        process: WriteProcess = app.state.write_turn.process
        first = process.pid
        assert first is not None
        holder = settings.engine()
        answers: list[httpx.Response] = []
        try:
            with adapter_of(holder.db).write_turn(holder.db):
                asking = threading.Thread(target=lambda: answers.append(client.offer()))
                asking.start()
                until(lambda: _waits_for_a_lock(first), "the writing process to wait its turn")
                os.kill(first, signal.SIGKILL)
                asking.join(BOUND)
        finally:
            holder.db.dispose()
        assert [r.status_code for r in answers] == [503]
        refused = answers[0].json()
        assert refused["code"] == "database_unavailable"
        assert "retry with the same Idempotency-Key" in refused["message"]
        assert _contracts(settings) == 0
        again = client.post(
            "/v1/contracts", "client:acme", OFFER, **{"Idempotency-Key": uuid.uuid4().hex}
        )
        assert again.status_code == 201, again.text
        assert process.pid not in (None, first)
    assert _contracts(settings) == 1  # by the new process
    logged = [
        (r.getMessage(), r.fields.get("pid"))  # type: ignore[attr-defined]
        for r in caplog.records
        if getattr(r, "fields", {}).get("event", "").startswith("write_process")
    ]
    assert logged[0] == ("writing process started", first)
    assert logged[1][0] == "the writing process ended with writes in hand"
    assert logged[2][0] == "writing process started" and logged[2][1] != first


def _waits_for_a_lock(pid: int) -> bool:
    """Whether process `pid` waits, blocked in the kernel, for a file lock (`/proc/locks`
    lists a waiter as `N: -> FLOCK ADVISORY WRITE <pid> ...`)."""
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[1] == "->" and fields[5] == str(pid):
            return True
    return False


def test_the_writing_process_loads_the_engine_not_the_web_framework() -> None:
    """It runs from `escrowflow.write_process`, which imports neither FastAPI nor the API:
    the second process costs the engine's memory and start-up, not the server's."""
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, escrowflow.write_process; "
            "print(sorted(m for m in ('fastapi', 'starlette', 'uvicorn', 'escrowflow.api') "
            "if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert loaded.stdout.strip() == "[]"


def test_at_the_apps_end_the_writing_process_answers_the_writes_it_has_then_ends(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path / "w.db")
    process = WriteProcess(settings)
    client = Actor.parse("client:acme")

    async def main() -> list[Any]:
        await process.start()
        pid = process.pid
        assert pid is not None
        deadline = time.monotonic() + BOUND
        asked = [
            asyncio.ensure_future(process.call(deadline, "create_contract", (client, OFFER), {}))
            for _ in range(3)
        ]
        await asyncio.sleep(0)  # each has sent its frame and waits for its answer
        await process.stop()
        assert not Path(f"/proc/{pid}").exists()
        return await asyncio.gather(*asked)

    answers = asyncio.run(main())
    assert [(a["entity"], a["event"]) for a in answers] == [("contract", "create")] * 3
    assert _contracts(settings) == 3


def test_a_refusal_of_a_class_the_api_cannot_find_is_a_plain_failure_naming_it() -> None:
    refused = _rebuilt(("error", "escrowflow.nowhere", "Gone", {"message": "it went"}))
    assert isinstance(refused, RuntimeError)
    assert str(refused) == (
        "the write failed in the writing process: escrowflow.nowhere.Gone: it went"
    )
    known = _rebuilt(_portable(StorageBusy("wait", code="database_busy", details={"n": 1})))
    assert isinstance(known, StorageBusy)
    assert (known.message, known.code, known.details) == ("wait", "database_busy", {"n": 1})


def test_a_writing_process_that_dies_idle_is_logged_at_once_and_replaced_at_the_next_write(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="escrowflow.api")
    settings = _settings(tmp_path / "w.db")
    process = WriteProcess(settings)
    client = Actor.parse("client:acme")

    async def main() -> tuple[int, int | None]:
        await process.start()
        first = process.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        give_up = time.monotonic() + BOUND
        while process.pid is not None:  # the API's end has seen it go
            assert time.monotonic() < give_up, "the writing process's end went unseen"
            await asyncio.sleep(0.01)
        ended = [r for r in caplog.records if r.getMessage().startswith("the writing process")]
        assert [r.getMessage() for r in ended] == [
            "the writing process ended: the next write starts another"
        ]
        assert ended[0].fields["status"] == -signal.SIGKILL  # type: ignore[attr-defined]
        try:
            await process.call(time.monotonic() + BOUND, "create_contract", (client, OFFER), {})
            return first, process.pid
        finally:
            await process.stop()

    first, second = asyncio.run(main())
    assert second not in (None, first)
    assert _contracts(settings) == 1


def test_a_writing_process_whose_engine_cannot_start_says_why(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.db"
    process = WriteProcess(Settings(database_url=f"sqlite:///{missing}"))
    with pytest.raises(StorageError) as refused:
        asyncio.run(process.start())
    assert refused.value.code == "not_migrated"
    assert str(missing) in refused.value.message and "escrowflow migrate" in refused.value.message
    assert process.pid is None
