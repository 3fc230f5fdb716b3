"""The console in a real browser: Debian's chromium driven by Playwright, against
`escrowflow serve` as a process with the test clock. No sleeping: every wait is on the
page's or the database's state."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from sqlalchemy.engine import Engine as DBEngine

from tests.served import Caller, Server

CHROMIUM = os.environ.get("ESCROWFLOW_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# As the machine's own probe starts it: headless, no sandbox (root), nothing phoning home.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REMINDERS = json.dumps({"review_window": ["P3D", "P1D"], "refund_response_time": ["P3D"]})


# Module-scoped, not session-scoped: Playwright's sync API keeps an event loop running
# in this thread while it is open, and later tests' `asyncio.run` would find it.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), f"no chromium at {CHROMIUM}: apt-get install chromium"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield launched
        launched.close()


@pytest.fixture
def server(db: DBEngine, tmp_path: Path) -> Iterator[Server]:
    s = Server(db, tmp_path, ESCROWFLOW_REMINDERS=REMINDERS, ESCROWFLOW_API_TOKEN_CACHE_SECONDS="0")
    try:
        s.wait_ready()
        yield s
    finally:
        s.kill()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    opened = context.new_page()
    yield opened
    context.close()


def screenshot(page: Page, name: str) -> None:
    """Saved under $ESCROWFLOW_SCREENSHOTS when it is set (for people to look at)."""
    folder = os.environ.get("ESCROWFLOW_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


@pytest.fixture
def caller(server: Server, db: DBEngine) -> Iterator[Caller]:
    """The marketplace's backend, acting for the parties over HTTP."""
    service = Caller(server, db, "act:client", "act:freelancer", "read")
    yield service
    service.http.close()
