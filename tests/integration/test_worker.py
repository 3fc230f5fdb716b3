"""The daemon's worker, in-process: a real APScheduler, an injected clock the test moves."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import partial

import pytest
from apscheduler.schedulers.base import STATE_STOPPED

from scheduler.worker import Worker, worker_status
from storage.db import transaction
from storage.models import CONTRACTS, DEADLINES
from tests.helpers import CLIENT, FREELANCER, Scenario, check_invariants, race
from workflows.retry import DEADLINE_RETRY
from workflows.sweeper import Sweeper


def eventually(check: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait (in real time, briefly) for the worker to have done something."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the worker did not get there in time"
        time.sleep(0.02)


@contextmanager
def running(sc: Scenario, **kw: object) -> Iterator[Worker]:
    worker = Worker(sc.engine, interval=0.05, **kw)  # type: ignore[arg-type]
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


def test_ms10_auto_approval_fired_by_the_worker(sc: Scenario) -> None:
    contract, m = sc.in_review(10_000)
    with running(sc) as worker:
        sc.clock.advance(timedelta(days=13, hours=23))
        swept = worker.sweeps
        eventually(lambda: worker.sweeps >= swept + 3)  # several sweeps: nothing is due yet
        assert sc.state("milestone", m) == "in_review"
        sc.clock.advance(timedelta(hours=1))
        eventually(lambda: sc.state("milestone", m) == "released")
    assert sc.ledger(contract)[-1] == ("release", 10_000)
    last = sc.history("milestone", m)[-1]
    assert (last["cause"], last["actor_role"]) == ("timer", "system")
    assert last["due_at"] <= last["at"]
    assert worker.totals.fired == 1


def test_cr6_change_request_expired_by_the_worker(sc: Scenario) -> None:
    _contract, (m,) = sc.active_contract(10_000)
    sc.fire("milestone", m, "fund", CLIENT)
    cr = sc.fire("milestone", m, "open_change_request", CLIENT, {"amount": 20_000})
    request = cr["created"][0]["id"]
    with running(sc):
        sc.clock.advance(timedelta(days=7))
        eventually(lambda: sc.state("change_request", request) == "expired")
    assert sc.row("milestone", m)["amount"] == 10_000


def test_rf2_refund_by_default_fired_by_the_worker(sc: Scenario) -> None:
    contract, (m,) = sc.active_contract(10_000)
    sc.fire("milestone", m, "fund", CLIENT)
    sc.fire("contract", contract, "end", CLIENT)
    refund = sc.fire("contract", contract, "request_refund", CLIENT)["created"][0]["id"]
    with running(sc):
        sc.clock.advance(timedelta(days=7))
        eventually(lambda: sc.state("refund", refund) == "refunded")
    assert sc.ledger(contract)[-1] == ("refund", 10_000)
    check_invariants(sc.db)


def test_overdue_deadlines_fire_at_start_oldest_first_once(sc: Scenario) -> None:
    milestones = []
    for _ in range(5):
        milestones.append(sc.in_review(1_000)[1])
        sc.clock.advance(timedelta(hours=1))
    sc.clock.advance(timedelta(days=30))  # the daemon was down
    with running(sc, batch_size=2):
        eventually(lambda: all(sc.state("milestone", m) == "released" for m in milestones))
    fired = sorted(
        (sc.history("milestone", m)[-1]["id"], sc.history("milestone", m)[-1]["due_at"])
        for m in milestones
    )
    assert [due for _, due in fired] == sorted(due for _, due in fired)  # oldest first
    assert sum(1 for d in sc.rows("deadlines") if d["status"] == "fired") == 5


def test_a_failing_deadline_is_retried_with_backoff_and_the_batch_still_fires(
    sc: Scenario,
) -> None:
    good_contract, good = sc.in_review(10_000)
    bad_contract, bad = sc.in_review(10_000)
    # Break the bad contract so that paying out trips the database's ledger check.
    with transaction(sc.db) as conn:
        conn.execute(
            CONTRACTS.update()
            .where(CONTRACTS.c.id == bad_contract)
            .values(held=5_000, deposited=5_000)
        )
    sc.clock.advance(timedelta(days=14))
    sweeper = Sweeper(sc.engine, "test", batch_size=10)
    report = sweeper.sweep()
    assert (report.fired, report.failed) == (1, 1)
    assert report.isolated  # the batch was fired again one deadline at a time
    assert sc.state("milestone", good) == "released"
    assert sc.state("milestone", bad) == "in_review"  # rolled back alone
    (deadline,) = sc.pending_deadlines("milestone", bad)
    assert deadline["attempts"] == 1 and "ck_contracts" in deadline["last_error"]
    assert deadline["next_attempt_at"] == sc.clock.now() + DEADLINE_RETRY.wait(1)
    status = worker_status(sc.engine)
    assert [f["id"] for f in status["failing"]] == [deadline["id"]]
    assert sweeper.sweep().claimed == 0  # not before its backoff
    sc.clock.advance(DEADLINE_RETRY.wait(1))
    assert sweeper.sweep().failed == 1
    assert sc.pending_deadlines("milestone", bad)[0]["attempts"] == 2
    with transaction(sc.db) as conn:  # repaired: the next retry succeeds
        conn.execute(
            CONTRACTS.update()
            .where(CONTRACTS.c.id == bad_contract)
            .values(held=10_000, deposited=10_000)
        )
    sc.clock.advance(DEADLINE_RETRY.wait(2))
    assert sweeper.sweep().fired == 1
    assert sc.state("milestone", bad) == "released"
    check_invariants(sc.db)
    assert good_contract != bad_contract


def test_a_batch_writes_every_ledger_entry_event_and_closed_deadline_together(
    sc: Scenario,
) -> None:
    milestones = [sc.in_review(1_000 + i)[1] for i in range(6)]
    sc.clock.advance(timedelta(days=14))
    report = Sweeper(sc.engine, "test", batch_size=10).sweep()
    assert (report.fired, report.failed, report.isolated) == (6, 0, False)
    releases = sc.rows("ledger_entries", kind="release")
    assert sorted((r["milestone_id"], r["amount"]) for r in releases) == [
        (m, 1_000 + i) for i, m in enumerate(milestones)
    ]
    approvals = sc.rows("history", event="auto_approve")
    events = sc.rows("outbox_events", type="milestone.auto_approve")
    assert {r["history_id"] for r in releases} == {h["id"] for h in approvals}
    assert {e["history_id"] for e in events} == {h["id"] for h in approvals}
    fired = [d for d in sc.rows("deadlines") if d["status"] == "fired"]
    assert {d["history_id"] for d in fired} == {h["id"] for h in approvals}
    assert all(d["closed_at"] == sc.clock.now() and d["claimed_by"] is None for d in fired)
    check_invariants(sc.db)


def test_two_deadlines_of_one_contract_in_one_batch_each_see_the_other(
    sc: Scenario,
) -> None:
    contract, (a, b) = sc.active_contract(10_000, 20_000)
    sc.fire("milestone", a, "fund", CLIENT)
    sc.fire("milestone", a, "release", CLIENT, {"amount": 6_000})  # 4,000 credit
    refund = sc.fire("contract", contract, "request_refund", CLIENT)["created"][0]["id"]
    sc.fire("milestone", b, "fund", CLIENT)
    sc.fire("milestone", b, "submit", FREELANCER)
    sc.clock.advance(timedelta(days=14))  # the refund's 7 days and b's 14 are both up
    report = Sweeper(sc.engine, "test", batch_size=10).sweep()
    assert (report.batches, report.fired, report.isolated) == (1, 2, False)
    assert sc.state("refund", refund) == "refunded"
    assert sc.state("milestone", b) == "released"
    row = sc.row("contract", contract)
    assert (row["held"], row["released"], row["refunded"]) == (0, 26_000, 4_000)
    versions = [h["version"] for h in sc.history("contract", contract)]
    assert versions == list(range(1, len(versions) + 1))
    check_invariants(sc.db)


@contextmanager
def ledger_entries_refused(sc: Scenario, contract_id: int) -> Iterator[None]:
    """A database trigger refusing this contract's ledger entries (a failing write).

    Dropped afterwards: the PostgreSQL schema outlives the test (tables are truncated).
    """
    postgresql = sc.db.dialect.name == "postgresql"
    with transaction(sc.db) as conn:
        if postgresql:
            conn.exec_driver_sql(
                "CREATE FUNCTION refuse_ledger() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'ledger refused'; END $$"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse_ledger BEFORE INSERT ON ledger_entries FOR EACH ROW "
                f"WHEN (NEW.contract_id = {contract_id}) EXECUTE FUNCTION refuse_ledger()"
            )
        else:
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse_ledger BEFORE INSERT ON ledger_entries "
                f"WHEN NEW.contract_id = {contract_id} "
                "BEGIN SELECT RAISE(ABORT, 'ledger refused'); END"
            )
    try:
        yield
    finally:
        with transaction(sc.db) as conn:
            if postgresql:
                conn.exec_driver_sql("DROP TRIGGER refuse_ledger ON ledger_entries")
                conn.exec_driver_sql("DROP FUNCTION refuse_ledger()")
            else:
                conn.exec_driver_sql("DROP TRIGGER refuse_ledger")


def test_a_write_failing_at_the_end_of_a_batch_fails_only_its_own_deadline(
    sc: Scenario,
) -> None:
    _, first = sc.in_review(10_000)
    bad_contract, bad = sc.in_review(10_000)
    _, last = sc.in_review(10_000)
    sc.clock.advance(timedelta(days=14))
    with ledger_entries_refused(sc, bad_contract):
        report = Sweeper(sc.engine, "test", batch_size=10).sweep()
    assert (report.fired, report.failed, report.isolated) == (2, 1, True)
    assert [sc.state("milestone", m) for m in (first, bad, last)] == [
        "released",
        "in_review",
        "released",
    ]
    (deadline,) = sc.pending_deadlines("milestone", bad)
    assert deadline["attempts"] == 1 and deadline["last_error"]
    assert len(sc.rows("ledger_entries", kind="release")) == 2
    check_invariants(sc.db)


def test_es3_release_racing_the_sweep_one_effect_per_round(sc: Scenario) -> None:
    for _ in range(20):
        contract, m = sc.in_review(10_000)
        sc.clock.advance(timedelta(days=14))
        release, sweep = race(
            partial(sc.fire, "milestone", m, "release", CLIENT),
            Sweeper(sc.engine, "racer").sweep,
        )
        outcome = {"release": release, "sweep": sweep}
        released = isinstance(outcome["release"], dict)
        fired = outcome["sweep"].fired  # type: ignore[attr-defined]
        assert released + fired == 1, outcome
        assert [e for e in sc.ledger(contract) if e[0] == "release"] == [("release", 10_000)]
        (deadline,) = [
            d
            for d in sc.rows("deadlines", entity="milestone", entity_id=m)
            if d["status"] != "cancelled"
        ] or [None]
        if released:
            assert deadline is None  # the release cancelled it
    check_invariants(sc.db)


def test_heartbeat_and_status(sc: Scenario) -> None:
    sc.in_review(1_000)
    with running(sc) as worker:
        # Wait on the row, not on the sweep count: heartbeats are at most one an interval,
        # so two sweeps can come before the first heartbeat that records a sweep.
        eventually(lambda: any(w["last_sweep_at"] for w in worker_status(sc.engine)["workers"]))
        status = worker_status(sc.engine)
        (row,) = status["workers"]
        assert row["id"] == worker.id and row["alive"] and row["last_sweep_at"] is not None
        assert status["pending"] == 1 and status["overdue"] == 0
        # Which server: a file, or a host and its timeline (a promotion starts a new one).
        database = status["database"]
        assert set(database) in ({"file"}, {"host", "timeline"}), database
        assert database.get("timeline", 1) == 1
    (row,) = worker_status(sc.engine)["workers"]
    assert row["stopped_at"] is not None and not row["alive"]
    assert FREELANCER.party == "ada"
    assert DEADLINES.name == "deadlines"


def test_two_deadlines_of_one_contract_in_one_batch_each_see_the_others_writes(
    sc: Scenario,
) -> None:
    """RF2 and CR6 fall due together on one contract: the second reads the contract after
    the first's batched writes, and the books come out as the rules say."""
    contract, (a, b) = sc.active_contract(10_000, 8_000)
    sc.fire("milestone", a, "fund", CLIENT)
    sc.fire("milestone", a, "release", CLIENT, {"amount": 6_000})  # 4,000 left as credit
    sc.fire("milestone", b, "fund", CLIENT)  # the credit pays 4,000 of it; 4,000 deposited
    sc.fire("milestone", b, "release", CLIENT, {"amount": 5_000})  # 3,000 credit
    refund = sc.fire("contract", contract, "request_refund", CLIENT)["created"][0]["id"]
    sc.add_milestones(contract, {"title": "c", "amount": 2_000})
    (c,) = [m["id"] for m in sc.rows("milestones", contract_id=contract) if m["id"] not in (a, b)]
    sc.fire("milestone", c, "fund", CLIENT)
    request = sc.fire("milestone", c, "open_change_request", CLIENT, {"amount": 2_500})
    change = request["created"][0]["id"]
    sc.clock.advance(timedelta(days=7))
    report = Sweeper(sc.engine, "test", batch_size=10).sweep()
    assert (report.claimed, report.fired, report.failed, report.isolated) == (2, 2, 0, False)
    assert sc.state("refund", refund) == "refunded"
    assert sc.state("change_request", change) == "expired"
    assert sc.row("milestone", c)["open_change_request_id"] is None
    held = sc.row("contract", contract)
    assert (held["refunded"], held["held"], held["credit"]) == (3_000, 2_000, 0)
    check_invariants(sc.db)


def test_sigterm_while_a_sweep_schedules_its_next_wakeup_stops_the_worker(
    sc: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    # APScheduler's shutdown holds its job-store lock while it waits for the running
    # sweep; a sweep then moving its job to the next deadline waited on that lock for
    # ever (a worker hung after SIGTERM). The stop and the move now exclude each other.
    worker = Worker(sc.engine, interval=0.05)
    asked, answer = threading.Event(), threading.Event()

    def next_due() -> datetime:  # a deadline due now: the sweep moves its job
        asked.set()
        answer.wait(timeout=30)
        return sc.clock.now()

    monkeypatch.setattr(worker.sweeper, "next_due", next_due)
    worker.start()
    assert asked.wait(timeout=30), "the worker never swept"
    stopper = threading.Thread(target=worker.stop)
    stopper.start()
    eventually(lambda: worker._scheduler.state == STATE_STOPPED)  # stop() is shutting down
    answer.set()
    stopper.join(timeout=30)
    assert not stopper.is_alive(), "stop() hung"
