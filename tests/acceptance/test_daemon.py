"""The daemon as a process (`escrowflow worker`): several at once, killed, stopped.

Deadlines are seeded already overdue in real time, so the workers run on the wall clock.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine as DBEngine

from storage.models import DEADLINES, HISTORY, LEDGER, OUTBOX, WORKERS
from tests.helpers import check_invariants
from tests.seed import seed_due_auto_approvals, seed_due_reminders
from tests.served import until

IN_CI = bool(os.environ.get("CI"))
DRAIN = int(os.environ.get("ESCROWFLOW_DRAIN_DEADLINES", "10000" if IN_CI else "4000"))
OVERDUE = datetime.now(UTC) - timedelta(days=3)


class Daemons:
    def __init__(self, url: str, logs: Path) -> None:
        self.url = url
        self.logs = logs
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, batch_size: int = 200) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "ESCROWFLOW_DATABASE_URL": self.url,
            "ESCROWFLOW_WORKER_LEASE": "2",
            "ESCROWFLOW_SQLITE_SYNCHRONOUS": "NORMAL",
        }
        log = open(self.logs / f"worker-{len(self.processes)}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "escrowflow",
                "worker",
                "--interval",
                "0.2",
                "--batch-size",
                str(batch_size),
            ],
            env=env,
            stdout=log,
            stderr=log,
        )
        log.close()
        self.processes.append(process)
        return process

    def last_log(self) -> str:
        """Why the daemons stopped: the end of the newest log."""
        logs = sorted(self.logs.glob("worker-*.log"))
        return logs[-1].read_text(errors="replace")[-2000:] if logs else "no log"

    def failures(self) -> str:
        """Why workers exited other than 0: the end of each one's log."""
        return "\n".join(
            f"worker {n} exited {p.returncode}: "
            + (self.logs / f"worker-{n}.log").read_text(errors="replace")[-1000:]
            for n, p in enumerate(self.processes)
            if p.returncode not in (0, None)
        )

    def stop_all(self, db: DBEngine) -> list[int]:
        """SIGTERM to every worker once it has started (its signal handler is set before
        its first heartbeat): on a fast machine the others may have drained the backlog
        before a late one is up, and a signal then would kill it mid-start."""
        for p in self.processes:
            until(lambda p=p: _started_or_gone(db, p), f"worker {p.pid} to start")
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        return [p.wait(timeout=60) for p in self.processes]


def _started_or_gone(db: DBEngine, process: subprocess.Popen[bytes]) -> bool:
    query = sa.select(sa.func.count()).where(WORKERS.c.pid == process.pid)
    return process.poll() is not None or _count(db, query) > 0


@pytest.fixture
def daemons(db: DBEngine, tmp_path: Path) -> Iterator[Daemons]:
    d = Daemons(db.url.render_as_string(hide_password=False), tmp_path)
    yield d
    for p in d.processes:
        if p.poll() is None:
            p.kill()
            p.wait()


def _count(db: DBEngine, query: sa.Select[tuple[int]]) -> int:
    with db.connect() as conn:
        return int(conn.execute(query).scalar_one())


def pending(db: DBEngine) -> int:
    return _count(db, sa.select(sa.func.count()).where(DEADLINES.c.status == "pending"))


def wait_until_drained(db: DBEngine, daemons: Daemons, timeout: float) -> None:
    end = time.monotonic() + timeout
    while pending(db):
        assert time.monotonic() < end, f"{pending(db)} deadlines still pending"
        assert any(p.poll() is None for p in daemons.processes), daemons.last_log()
        time.sleep(0.2)


def fired(db: DBEngine) -> int:
    return _count(db, sa.select(sa.func.count()).where(DEADLINES.c.status == "fired"))


def wait_until_fired(db: DBEngine, daemons: Daemons, at_least: int) -> None:
    """Poll the database until `at_least` deadlines have fired (state, not a delay)."""
    end = time.monotonic() + 300
    while fired(db) < at_least:
        assert time.monotonic() < end, f"only {fired(db)} of {at_least} deadlines fired"
        assert any(p.poll() is None for p in daemons.processes), daemons.last_log()
        time.sleep(0.005)


def _where(db: DBEngine, *conditions: sa.ColumnElement[bool]) -> int:
    return _count(db, sa.select(sa.func.count()).where(*conditions))


def _distinct(db: DBEngine, column: sa.Column[int], *conditions: sa.ColumnElement[bool]) -> int:
    return _count(db, sa.select(sa.func.count(sa.distinct(column))).where(*conditions))


def assert_each_fired_once(db: DBEngine, count: int) -> None:
    fired = _where(db, DEADLINES.c.status == "fired")
    approvals = _where(db, HISTORY.c.event == "auto_approve")
    releases = _where(db, LEDGER.c.kind == "release")
    distinct = _distinct(db, HISTORY.c.entity_id, HISTORY.c.event == "auto_approve")
    assert (fired, approvals, releases, distinct) == (count, count, count, count)
    check_invariants(db)


# Several daemons share one database on PostgreSQL (SQLite has one writer: one daemon).
@pytest.mark.postgresql_only
@pytest.mark.slow  # worker processes draining thousands
def test_four_workers_drain_due_deadlines_exactly_once(
    db: DBEngine, backend: str, daemons: Daemons
) -> None:
    seed_due_auto_approvals(db, DRAIN, OVERDUE)
    for _ in range(4):
        daemons.start()
    wait_until_drained(db, daemons, timeout=600)
    assert daemons.stop_all(db) == [0, 0, 0, 0], daemons.failures()
    assert_each_fired_once(db, DRAIN)
    with db.connect() as conn:  # every worker took part
        workers = conn.execute(sa.text("SELECT fired FROM workers")).scalars().all()
    assert len(workers) == 4 and sum(workers) == DRAIN


@pytest.mark.slow  # worker processes draining thousands
def test_killed_workers_leave_every_deadline_fired_exactly_once(
    db: DBEngine, backend: str, daemons: Daemons
) -> None:
    count = 3_000
    seed_due_auto_approvals(db, count, OVERDUE)
    workers = 2 if backend == "postgresql" else 1
    # Killed at points chosen by progress, read from the database, never after a delay:
    # a fast machine would drain everything before a wall-clock kill.
    for round_ in range(1, 5):
        started = [daemons.start(batch_size=100) for _ in range(workers)]
        wait_until_fired(db, daemons, round_ * count // 6)
        for process in started:
            process.kill()  # SIGKILL: no chance to finish anything
            process.wait()
    assert pending(db) > 0, "the kills came too late to test anything"
    daemons.start()
    wait_until_drained(db, daemons, timeout=300)  # claims of killed workers expire after the lease
    assert daemons.stop_all(db)[-1] == 0, daemons.failures()
    assert_each_fired_once(db, count)


@pytest.mark.slow  # worker processes draining thousands
def test_sigterm_finishes_the_batch_in_hand_and_exits_0(
    db: DBEngine, backend: str, daemons: Daemons
) -> None:
    count = 5_000  # 25 batches: far more than one batch in hand when the signal comes
    seed_due_auto_approvals(db, count, OVERDUE)
    process = daemons.start(batch_size=200)
    wait_until_fired(db, daemons, 1)  # a batch is in hand
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 0
    assert pending(db) > 0, "drained before the signal: it did not stop at the batch"
    check_invariants(db)  # no half-applied deadline: state, ledger and history agree
    done = fired(db)
    assert done == _count(db, sa.select(sa.func.count()).where(HISTORY.c.event == "auto_approve"))


def reminders_sent(db: DBEngine) -> tuple[int, int, int, int]:
    """Reminder rows fired, history rows, feed events, and distinct reminders in history."""
    return (
        _where(db, DEADLINES.c.status == "fired", DEADLINES.c.event.like("remind:%")),
        _where(db, HISTORY.c.event == "reminder"),
        _where(db, OUTBOX.c.type == "milestone.reminder"),
        _distinct(db, HISTORY.c.deadline_id, HISTORY.c.event == "reminder"),
    )


def assert_each_reminder_sent_once(db: DBEngine, milestones: int) -> None:
    assert reminders_sent(db) == (2 * milestones,) * 4
    # A reminder moves nothing: every milestone still under review, nothing released,
    # each auto-approval still pending.
    assert _where(db, LEDGER.c.kind == "release") == 0
    assert pending(db) == milestones
    check_invariants(db)


@pytest.mark.postgresql_only
def test_nt2_four_workers_send_each_reminder_exactly_once(
    db: DBEngine, backend: str, daemons: Daemons
) -> None:
    count = DRAIN // 4
    seed_due_reminders(db, count, datetime.now(UTC))
    for _ in range(4):
        daemons.start()
    wait_until_fired(db, daemons, 2 * count)
    assert daemons.stop_all(db) == [0, 0, 0, 0], daemons.failures()
    assert_each_reminder_sent_once(db, count)


def test_nt2_killed_workers_leave_every_reminder_sent_exactly_once(
    db: DBEngine, backend: str, daemons: Daemons
) -> None:
    count = 1_500  # two reminders each
    seed_due_reminders(db, count, datetime.now(UTC))
    workers = 2 if backend == "postgresql" else 1
    for round_ in range(1, 5):  # killed at progress points, never after a delay
        started = [daemons.start(batch_size=100) for _ in range(workers)]
        wait_until_fired(db, daemons, round_ * 2 * count // 6)
        for process in started:
            process.kill()
            process.wait()
    assert fired(db) < 2 * count, "the kills came too late to test anything"
    daemons.start()
    wait_until_fired(db, daemons, 2 * count)  # killed workers' claims expire after the lease
    assert daemons.stop_all(db)[-1] == 0, daemons.failures()
    assert_each_reminder_sent_once(db, count)
