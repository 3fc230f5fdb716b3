"""Small hostile inputs at the shells' edges: each is refused with one clear line or a
4xx, and changes nothing; and the worker's log says nothing about routine overlaps."""

from __future__ import annotations

import logging
import re
from datetime import timedelta

import httpx
import pytest
from sqlalchemy.engine import Engine as DBEngine

import scheduler.worker  # noqa: F401  (installs its log filter)
from tests.helpers import ADMIN, Scenario
from tests.integration.test_cli_admin import cli
from tests.live import Api


def _deadline_id(sc: Scenario, milestone: int) -> int:
    (row,) = sc.pending_deadlines("milestone", milestone)
    return int(row["id"])


@pytest.mark.parametrize("by", ["P3000000D", "P367D", "P99999999999999D", "PT-5S", "P２D"])  # noqa: RUF001
def test_an_extension_too_long_or_malformed_is_one_line_and_exit_2(
    sc: Scenario, db: DBEngine, by: str
) -> None:
    _contract, milestone = sc.in_review(10_000)
    deadline = _deadline_id(sc, milestone)
    before = sc.pending_deadlines("milestone", milestone)
    done = cli(
        db,
        "deadlines",
        "extend",
        str(deadline),
        "--as",
        "admin:disputes",
        "--reason",
        "x",
        "--by",
        by,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert sc.pending_deadlines("milestone", milestone) == before
    # A year is the most one extension adds (then extend again).
    sc.engine.adjust_deadline(deadline, "extend", ADMIN, "long review", timedelta(days=366))


def test_the_console_sign_in_refuses_a_form_posted_from_another_site(api: Api) -> None:
    token = api.token("read")
    with httpx.Client(base_url=api.base_url) as browser:
        forged = browser.post("/console/login", data={"token": token})  # no cookie, no csrf
        assert forged.status_code == 403
        assert "escrowflow_console" not in forged.cookies
        page = browser.get("/console/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        wrong = browser.post("/console/login", data={"token": token, "csrf": "guess"})
        assert wrong.status_code == 403
        # A refused form comes back with a fresh token (and cookie): sign in with it.
        fresh = re.search(r'name="csrf" value="([^"]+)"', wrong.text)
        assert fresh is not None and fresh[1] != csrf[1]
        signed = browser.post("/console/login", data={"token": token, "csrf": fresh[1]})
        assert signed.status_code == 303 and "escrowflow_console" in signed.cookies


def test_the_worker_log_has_no_line_per_skipped_overlapping_run() -> None:
    """A dispatch waiting on slow receivers outlasts the interval: APScheduler's
    "maximum number of running instances reached" is routine, not a warning a second."""
    log = logging.getLogger("apscheduler.scheduler")
    skipped = log.makeRecord(
        log.name,
        logging.WARNING,
        __file__,
        1,
        'Execution of job "%s" skipped: maximum number of running instances reached (%d)',
        ("escrowflow-webhooks", 1),
        None,
    )
    other = log.makeRecord(log.name, logging.WARNING, __file__, 1, "Run time missed", (), None)
    assert not log.filter(skipped)
    assert log.filter(other)
