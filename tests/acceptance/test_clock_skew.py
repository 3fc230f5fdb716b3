"""DL2: one clock for the deployment. Real worker processes whose own clocks are 2 days
ahead and 3 days behind, and an API process 2 days behind doing the submits: no timer
fires before the deployment's time reaches its due date, and history says so.

The deployment's time is the test clock file (standing for the database server's clock,
for every process alike); each process's own clock is shifted by the test-only
ESCROWFLOW_TEST_CLOCK_SKEW. A second test runs on the real PostgreSQL server clock, no
test clock at all, with a worker 2 days ahead and a two-second review window.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine as DBEngine

from escrowflow.settings import Settings
from storage.models import DEADLINES, HISTORY, LEDGER, MILESTONES, WORKERS
from tests.helpers import Scenario, check_invariants
from tests.served import START, Caller, Server, until
from workflows.clock import ManualClock

pytestmark = pytest.mark.postgresql_only

AHEAD, BEHIND, API_SKEW = "P2D", "-P3D", "-P2D"
N = 5  # of each timed kind


def _rows(db: DBEngine, query: sa.Select[Any]) -> list[dict[str, Any]]:
    with db.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def _swept_at(db: DBEngine, moment: datetime, workers: int, *pids: int) -> bool:
    """Every worker (of `pids`, if given) has swept, and said so, on the deployment's
    clock at `moment`."""
    query = sa.select(WORKERS.c.last_sweep_at).where(WORKERS.c.stopped_at.is_(None))
    found = _rows(db, query.where(WORKERS.c.pid.in_(pids)) if pids else query)
    return len(found) == workers and all(
        r["last_sweep_at"] is not None and r["last_sweep_at"] >= moment for r in found
    )


@contextmanager
def stamped(db: DBEngine) -> Iterator[None]:
    from alembic import command

    from storage.migrate import alembic_config

    command.stamp(alembic_config(db), "head")
    try:
        yield
    finally:
        with db.begin() as conn:
            conn.exec_driver_sql("DROP TABLE alembic_version")


def _fired(db: DBEngine, event: str) -> list[dict[str, Any]]:
    return _rows(db, sa.select(HISTORY).where(HISTORY.c.event == event, HISTORY.c.cause == "timer"))


def test_dl2_skewed_workers_and_a_skewed_api_never_move_money_early(
    db: DBEngine, tmp_path: Path
) -> None:
    api = Server(db, tmp_path, "--no-worker", ESCROWFLOW_TEST_CLOCK_SKEW=API_SKEW)
    workers = [
        Server(db, tmp_path, command="worker", ESCROWFLOW_TEST_CLOCK_SKEW=skew)
        for skew in (AHEAD, BEHIND)
    ]
    try:
        api.wait_ready()
        caller = Caller(api, db, "act:client", "act:freelancer", "read")
        act = caller.act
        reviews, changes, refunds = [], [], []
        for _ in range(N):
            contract, m = caller.offer()
            act("freelancer:ada", f"/v1/contracts/{contract}/events/accept")
            act("client:acme", f"/v1/milestones/{m}/events/fund")
            act("freelancer:ada", f"/v1/milestones/{m}/events/submit")
            reviews.append(m)
            contract, m = caller.offer()
            act("freelancer:ada", f"/v1/contracts/{contract}/events/accept")
            act("client:acme", f"/v1/milestones/{m}/events/fund")
            cr = act("client:acme", f"/v1/milestones/{m}/change_requests", {"amount": 60_000})
            changes.append(next(c["id"] for c in cr["created"] if c["entity"] == "change_request"))
            contract, m = caller.offer()
            act("freelancer:ada", f"/v1/contracts/{contract}/events/accept")
            act("client:acme", f"/v1/milestones/{m}/events/fund")
            act("freelancer:ada", f"/v1/milestones/{m}/events/submit")
            act("client:acme", f"/v1/milestones/{m}/events/release", {"amount": 20_000})
            refund = act("client:acme", f"/v1/contracts/{contract}/refunds", {"reason": "cut"})
            refunds.append(next(c["id"] for c in refund["created"] if c["entity"] == "refund"))
        # The API 2 days behind stamped on the deployment's clock: due dates say so.
        due = {
            (d["event"], d["entity_id"]): d["due_at"]
            for d in _rows(db, sa.select(DEADLINES).where(DEADLINES.c.status == "pending"))
        }
        assert {due[("auto_approve", m)] for m in reviews} == {START + timedelta(days=14)}
        assert {due[("expire", c)] for c in changes} == {START + timedelta(days=7)}
        assert {due[("refund_by_default", r)] for r in refunds} == {START + timedelta(days=7)}

        for w in workers:
            w.wait_started(db)
        # Just before each due date, after every worker has swept: nothing has fired.
        for moment in (timedelta(days=5), timedelta(days=7) - timedelta(seconds=1)):
            api.set_clock(START + moment)
            until(lambda m=moment: _swept_at(db, START + m, 2), f"sweeps at day {moment}")
            assert _fired(db, "expire") == [] and _fired(db, "refund_by_default") == []
        api.set_clock(START + timedelta(days=7))
        until(lambda: len(_fired(db, "expire")) == N, "the expiries")
        until(lambda: len(_fired(db, "refund_by_default")) == N, "the default refunds")
        for moment in (timedelta(days=12), timedelta(days=14) - timedelta(seconds=1)):
            api.set_clock(START + moment)
            until(lambda m=moment: _swept_at(db, START + m, 2), f"sweeps at day {moment}")
            assert _fired(db, "auto_approve") == []
        api.set_clock(START + timedelta(days=14))
        until(lambda: len(_fired(db, "auto_approve")) == N, "the auto-approvals")

        # History's firing times are the deployment's, never a host's own.
        for event, days in (("expire", 7), ("refund_by_default", 7), ("auto_approve", 14)):
            rows = _fired(db, event)
            assert {r["due_at"] for r in rows} == {START + timedelta(days=days)}
            assert all(r["at"] >= r["due_at"] for r in rows)
            assert all(r["at"] - r["due_at"] < timedelta(days=1) for r in rows)
        # The right money to the right people: 500.00 to each freelancer on day 14, the
        # unreleased 300.00 back to each client on day 7.
        ledger = _rows(db, sa.select(LEDGER).where(LEDGER.c.kind != "deposit"))
        releases = [e for e in ledger if e["kind"] == "release" and e["amount"] == 50_000]
        assert len(releases) == N
        assert [e["amount"] for e in ledger if e["kind"] == "refund"] == [30_000] * N
        states = _rows(db, sa.select(MILESTONES.c.id, MILESTONES.c.state))
        assert {r["state"] for r in states if r["id"] in reviews} == {"released"}
        check_invariants(db)

        # The skews are seen: each worker's heartbeat, the API's metrics and readiness.
        skews = sorted(
            r["clock_skew_seconds"] for r in _rows(db, sa.select(WORKERS.c.clock_skew_seconds))
        )
        assert skews == [-3 * 86400.0, 2 * 86400.0]
        metrics = caller.http.get("/metrics").text
        assert "escrowflow_clock_skew_seconds -172800.0" in metrics
        with stamped(db):  # the suite's schema is made from the models: say it is migrated
            ready = caller.http.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "clock_skew"
        assert ready.json()["clock_skew_seconds"] == -172800.0
        logs = "".join(w.log.read_text() for w in workers)
        assert '"event": "clock_skew"' in logs and '"event": "test_clock"' in logs
        caller.http.close()
        assert [w.stop() for w in workers] == [0, 0]
        assert api.stop() == 0
    finally:
        for process in (api, *workers):
            process.kill()


def test_dl2_a_worker_days_ahead_on_the_real_server_clock_fires_nothing_early(
    db: DBEngine, tmp_path: Path
) -> None:
    """No test clock: the PostgreSQL server's own. A two-second review window, a worker
    two days ahead; at every look, nothing is released while the server's clock is
    before the due date, and the auto-approval's history time is the server's."""
    url = db.url.render_as_string(hide_password=False)
    settings = Settings(database_url=url, review_window=timedelta(seconds=2), reminders={})
    engine = settings.engine()
    env = {
        **os.environ,
        "ESCROWFLOW_DATABASE_URL": settings.database_url,
        "ESCROWFLOW_REVIEW_WINDOW": "2",
        "ESCROWFLOW_REMINDERS": "[]",
        "ESCROWFLOW_TEST_CLOCK_SKEW": AHEAD,
        "ESCROWFLOW_WORKER_LEASE": "2",
    }
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "escrowflow", "worker", "--interval", "0.05"],
            env=env,
            stdout=out,
            stderr=out,
        )
    try:
        sc = Scenario(engine, ManualClock())  # the engine's clock is the server's
        contracts = [sc.in_review(10_000) for _ in range(3)]
        milestones = [m for _c, m in contracts]
        due = {
            d["entity_id"]: d["due_at"]
            for d in _rows(db, sa.select(DEADLINES).where(DEADLINES.c.event == "auto_approve"))
        }
        looks = 0
        end = time.monotonic() + 60
        while True:
            assert worker.poll() is None, log.read_text()
            assert time.monotonic() < end, log.read_text()
            with db.connect() as conn:
                states = dict(
                    conn.execute(
                        sa.select(MILESTONES.c.id, MILESTONES.c.state).where(
                            MILESTONES.c.id.in_(milestones)
                        )
                    ).all()
                )
                server_now = conn.execute(sa.text("SELECT clock_timestamp()")).scalar_one()
            looks += 1
            # The states are read before the clock: released then means fired before
            # `server_now` (read the other way round, a firing between the two reads
            # looked early: it failed once in CI).
            for m in milestones:
                if states[m] == "released":
                    assert server_now >= due[m], "released before its due date"
            if all(s == "released" for s in states.values()):
                break
            time.sleep(0.05)
        assert looks > 1  # it was looked at while still in review
        for row in _fired(db, "auto_approve"):
            assert row["at"] >= row["due_at"] == due[row["entity_id"]]
        skew = _rows(db, sa.select(WORKERS.c.clock_skew_seconds))[0]["clock_skew_seconds"]
        assert abs(skew - 2 * 86400) < 5  # measured against the server, not configured
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        engine.close()  # its database and its server clock's own connection


def test_dl2_a_killed_workers_claims_are_taken_over_after_one_lease_of_database_time(
    db: DBEngine, tmp_path: Path
) -> None:
    """A worker 2 days ahead claims a batch and is killed -9 before firing it: its lease
    runs on the database's clock (not its own, 2 days later), and another worker, 3 days
    behind, fires the batch once that lease has run out."""
    from tests.seed import seed_due_auto_approvals

    seed_due_auto_approvals(db, 4000, due_at=START - timedelta(days=1))
    lease = timedelta(seconds=2)
    first = Server(
        db,
        tmp_path,
        "--batch-size",
        "4000",
        command="worker",
        ESCROWFLOW_TEST_CLOCK_SKEW=AHEAD,
        ESCROWFLOW_WORKER_LEASE="2",
    )
    try:
        claimed = sa.select(sa.func.count()).where(DEADLINES.c.claimed_by.is_not(None))
        end = time.monotonic() + 60
        while True:  # kill at the progress point: its claim has committed
            with db.connect() as conn:
                held = conn.execute(claimed).scalar_one()
            if held:
                first.process.kill()
                first.process.wait()
                break
            assert first.process.poll() is None, first.log.read_text()
            assert time.monotonic() < end, first.log.read_text()
        leases = _rows(
            db,
            sa.select(DEADLINES.c.claim_expires_at)
            .where(DEADLINES.c.claimed_by.is_not(None))
            .distinct(),
        )
        if not leases:
            pytest.fail("the killed worker had fired its whole batch: seed more deadlines")
        # The deployment's clock (the file) is START: the lease ends one lease later.
        assert {r["claim_expires_at"] for r in leases} == {START + lease}
        held_before = len(_rows(db, sa.select(DEADLINES.c.id).where(claimed.whereclause)))
        second = Server(
            db,
            tmp_path,
            command="worker",
            ESCROWFLOW_TEST_CLOCK_SKEW=BEHIND,
            ESCROWFLOW_WORKER_LEASE="2",
        )
        try:
            second.wait_started(db)
            # Within the lease (the deployment's clock has not moved): nothing taken over,
            # though this worker's own clock is 3 days behind and the first's 2 ahead.
            until(lambda: _swept_at(db, START, 1, second.process.pid), "the second worker's sweep")
            assert _fired(db, "auto_approve") == []
            assert len(_rows(db, sa.select(DEADLINES.c.id).where(claimed.whereclause))) == (
                held_before
            )
            first.set_clock(START + lease + timedelta(microseconds=1))
            pending = sa.select(sa.func.count()).where(DEADLINES.c.status == "pending")

            def drained() -> bool:
                with db.connect() as conn:
                    return conn.execute(pending).scalar_one() == 0

            until(drained, "the batch taken over")
            rows = _fired(db, "auto_approve")
            assert len(rows) == 4000 and len({r["entity_id"] for r in rows}) == 4000
            check_invariants(db)
            assert second.stop() == 0
        finally:
            second.kill()
    finally:
        first.kill()
