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

import httpx
from sqlalchemy.engine import Engine as DBEngine

from tests.live import free_port

START = datetime.fromisoformat("2026-01-05T09:00:00+00:00")


class Server:
    def __init__(self, db: DBEngine, tmp: Path, **settings: str) -> None:
        """`settings`: more ESCROWFLOW_* variables for the served process."""
        self.clock_file = tmp / "now.txt"
        self.set_clock(START)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "ESCROWFLOW_DATABASE_URL": db.url.render_as_string(hide_password=False),
            "ESCROWFLOW_TEST_CLOCK_FILE": str(self.clock_file),
            "ESCROWFLOW_WORKER_INTERVAL": "0.1",
            "ESCROWFLOW_SQLITE_SYNCHRONOUS": "NORMAL",
            **settings,
        }
        self.log = tmp / "server.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "escrowflow", "serve", "--port", str(self.port)],
                env=env,
                stdout=log,
                stderr=log,
            )

    def set_clock(self, when: datetime) -> None:
        self.clock_file.write_text(when.isoformat())

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

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(20)


def until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 20
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
