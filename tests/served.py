"""`escrowflow serve` (API and worker) as a process on 127.0.0.1, its clock moved through
a test-only setting (ESCROWFLOW_TEST_CLOCK_FILE; the server has no endpoint for it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import Engine as DBEngine

from tests.live import free_port

START = datetime.fromisoformat("2026-01-05T09:00:00+00:00")


class Server:
    def __init__(
        self, db: DBEngine, tmp: Path, *args: str, command: str = "serve", **settings: str
    ) -> None:
        """`settings`: more ESCROWFLOW_* variables for the served process; `args`: more
        arguments (`--no-worker`); `command`: `worker` runs a worker alone."""
        self.clock_file = tmp / "now.txt"
        if not self.clock_file.exists():  # processes of one test share its clock
            self.set_clock(START)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "ESCROWFLOW_DATABASE_URL": db.url.render_as_string(hide_password=False),
            "ESCROWFLOW_TEST_CLOCK_FILE": str(self.clock_file),
            "ESCROWFLOW_WORKER_INTERVAL": "0.1",
            "ESCROWFLOW_SQLITE_SYNCHRONOUS": "NORMAL",
            "ESCROWFLOW_REMINDERS": "[]",  # NT2 tests turn them on
            **settings,
        }
        self.log = tmp / f"{command}-{self.port}.log"
        where = ["--port", str(self.port)] if command == "serve" else ["--interval", "0.1"]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "escrowflow", command, *where, *args],
                env=env,
                stdout=log,
                stderr=log,
            )

    def set_clock(self, when: datetime) -> None:
        """Atomically: a served process reading the file never sees it half written."""
        fresh = self.clock_file.with_name(f".{self.clock_file.name}.{os.getpid()}")
        fresh.write_text(when.isoformat())
        os.replace(fresh, self.clock_file)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server did not start: {self.log.read_text()}")

    def wait_started(self, db: DBEngine) -> None:
        """A worker: its heartbeat row is written (it has started sweeping)."""
        import sqlalchemy as sa

        from storage.models import WORKERS

        query = sa.select(sa.func.count()).where(WORKERS.c.pid == self.process.pid)

        def started() -> bool:
            assert self.process.poll() is None, self.log.read_text()
            with db.connect() as conn:
                return bool(conn.execute(query).scalar_one())

        until(started, f"worker {self.process.pid} to start")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(20)

    def kill(self) -> None:
        """Make sure it is gone (after a failed test)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 20
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Caller:
    """A service calling the served process with a token of `scopes`."""

    def __init__(self, server: Server, db: DBEngine, *scopes: str) -> None:
        from escrowflow import tokens

        token = tokens.create(db, START, "web", scopes)["token"]
        self.http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"})

    def act(self, party: str, path: str, body: Any = None) -> Any:
        """POST as `party`; the answer's JSON (the test fails on an error)."""
        response = self.http.post(path, json=body, headers={"Escrowflow-Actor": party})
        assert response.status_code in (200, 201), response.text
        return response.json()

    def offer(self, amount: int = 50_000) -> tuple[int, int]:
        """acme offers ada a contract with one milestone: (contract, milestone)."""
        milestone = {"title": "Design", "amount": amount}
        body = {"freelancer_id": "ada", "title": "Shop", "currency": "USD"}
        offered = self.act("client:acme", "/v1/contracts", {**body, "milestones": [milestone]})
        (m,) = [c["id"] for c in offered["created"] if c["entity"] == "milestone"]
        return int(offered["id"]), int(m)
