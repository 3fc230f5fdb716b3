"""DL3: a deadline that retrying cannot mend stops after a bounded number of attempts, is
shown as failed, harms no other deadline, and fires once when an admin retries it.
And a contract row held by another connection stops no sweep (bounded waits)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine as DBEngine

from escrowflow.metrics import Metrics
from scheduler.worker import worker_status
from storage.errors import StorageBusy, TransitionRejected
from tests.helpers import ADMIN, CLIENT, Scenario
from tests.live import Api
from workflows.retry import DEADLINE_RETRY, LOCK_RETRY, RetryStrategy
from workflows.sweeper import fire_due


def _shift_held(db: DBEngine, contract: int, by: int) -> None:
    """Write contract totals that break ck_contracts_ledger_balances (or mend them): the
    database refuses every later update of that row, as a corrupt row would."""
    with db.begin() as conn:
        if db.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA ignore_check_constraints = ON")
            conn.exec_driver_sql(f"UPDATE contracts SET held = held + {by} WHERE id = {contract}")
            conn.exec_driver_sql("PRAGMA ignore_check_constraints = OFF")
        else:
            conn.exec_driver_sql(
                "ALTER TABLE contracts DROP CONSTRAINT ck_contracts_ledger_balances"
            )
            conn.exec_driver_sql(f"UPDATE contracts SET held = held + {by} WHERE id = {contract}")
            conn.exec_driver_sql(
                "ALTER TABLE contracts ADD CONSTRAINT ck_contracts_ledger_balances "
                "CHECK (deposited = released + refunded + held) NOT VALID"
            )


def _deadline(sc: Scenario, milestone: int) -> dict[str, object]:
    (row,) = sc.rows("deadlines", entity="milestone", entity_id=milestone, event="auto_approve")
    return row


def test_dl3_retry_wait_is_capped_at_any_attempt_count() -> None:
    for strategy in (DEADLINE_RETRY, RetryStrategy(timedelta(seconds=2), timedelta(days=9000))):
        waits = [strategy.wait(n) for n in (1, 2, 47, 48, 64, 65, 1000, 10**9)]
        assert waits[0] == strategy.base
        assert waits[1] == 2 * strategy.base
        assert all(w <= strategy.cap for w in waits)
        assert waits[-1] == strategy.cap  # the 47th attempt once overflowed here


def test_dl3_a_poison_deadline_fails_after_its_attempts_and_harms_no_other(
    sc: Scenario, db: DBEngine
) -> None:
    sc.engine.deadline_retry = replace(DEADLINE_RETRY, max_attempts=3)
    poisoned, bad = sc.in_review(10_000)
    _shift_held(db, poisoned, 1)
    fired_ok = []
    sc.clock.advance(timedelta(days=14))
    for attempt in range(1, 4):
        _other, good = sc.in_review(20_000)  # a deadline due in the same batch, each time
        sc.clock.advance(timedelta(days=14))
        report = fire_due(sc.engine)
        assert report.failed == 1, report.errors
        fired_ok.append(sc.state("milestone", good))
        row = _deadline(sc, bad)
        assert row["attempts"] == attempt
        assert (row["failed_at"] is not None) == (attempt == 3)
        assert "ck_contracts_ledger_balances" in str(row["last_error"])
        sc.clock.advance(DEADLINE_RETRY.cap)
    assert fired_ok == ["released"] * 3
    # Failed: no sweep claims it any more, and status and the metrics' source say so.
    sc.clock.advance(timedelta(days=30))
    assert fire_due(sc.engine).claimed == 0
    status = worker_status(sc.engine)
    assert [f["id"] for f in status["failed"]] == [_deadline(sc, bad)["id"]]
    assert status["failing"] == []
    scraped = Metrics(sc.engine).render().decode()
    assert "escrowflow_deadlines_failed 1.0" in scraped
    assert "escrowflow_deadlines_failing 0.0" in scraped
    # An admin cannot retry what has not failed, and retries once it is mended.
    deadline_id = int(str(_deadline(sc, bad)["id"]))
    _shift_held(db, poisoned, -1)
    result = sc.engine.adjust_deadline(deadline_id, "retry", ADMIN, "totals repaired")
    assert result["state"] == "pending"
    with pytest.raises(TransitionRejected):
        sc.engine.adjust_deadline(deadline_id, "retry", ADMIN, "again")
    assert fire_due(sc.engine).fired == 1
    assert sc.state("milestone", bad) == "released"
    assert sc.ledger(poisoned)[-1] == ("release", 10_000)
    assert fire_due(sc.engine).claimed == 0  # once
    retried = [h for h in sc.history("deadline", deadline_id) if h["event"] == "retry"]
    assert retried and retried[0]["actor_role"] == "admin"
    sc.check_invariants()


@contextmanager
def holding(db: DBEngine, contract: int) -> Iterator[None]:
    """Another connection holds the contract's row (`SELECT ... FOR UPDATE`)."""
    conn = db.connect()
    transaction = conn.begin()
    conn.execute(sa.text("SELECT id FROM contracts WHERE id = :id FOR UPDATE"), {"id": contract})
    try:
        yield
    finally:
        transaction.rollback()
        conn.close()


@pytest.mark.postgresql_only
def test_a_contract_row_held_elsewhere_stops_no_other_deadline(sc: Scenario, db: DBEngine) -> None:
    held, held_milestone = sc.in_review(10_000)
    others = [sc.in_review(10_000)[1] for _ in range(5)]
    sc.clock.advance(timedelta(days=14))
    with holding(db, held):
        report = fire_due(sc.engine)  # returns: it does not wait for the held row
        assert (report.fired, report.blocked) == (5, 1)
        assert [sc.state("milestone", m) for m in others] == ["released"] * 5
        assert sc.state("milestone", held_milestone) == "in_review"
        waiting = worker_status(sc.engine)["waiting_on_lock"]
        assert [(w["contract_id"], w["event"]) for w in waiting] == [(held, "auto_approve")]
        # The API's own request on the held contract gives up within the lock bound.
        with pytest.raises(StorageBusy) as refused:
            sc.fire("milestone", held_milestone, "release", CLIENT)
        assert refused.value.code == "database_busy"
    sc.clock.advance(LOCK_RETRY)
    assert fire_due(sc.engine).fired == 1
    assert sc.state("milestone", held_milestone) == "released"
    sc.check_invariants()


@pytest.mark.postgresql_only
def test_dl3_a_held_contract_never_fails_its_deadline_however_long_it_waits(
    sc: Scenario, db: DBEngine
) -> None:
    """Waiting on a lock is no failure: more sweeps than the attempts allowed, and the
    deadline is still pending, no attempt counted, and fires once the lock is gone."""
    sc.engine.deadline_retry = replace(DEADLINE_RETRY, max_attempts=2)
    held, milestone = sc.in_review(10_000)
    sc.clock.advance(timedelta(days=14))
    with holding(db, held):
        for _ in range(4):
            assert fire_due(sc.engine).blocked == 1
            sc.clock.advance(LOCK_RETRY)
        row = _deadline(sc, milestone)
        assert (row["attempts"], row["failed_at"], row["status"]) == (0, None, "pending")
        assert row["blocked_since"] is not None
    assert fire_due(sc.engine).fired == 1
    assert sc.state("milestone", milestone) == "released"


@pytest.mark.postgresql_only
def test_requests_on_a_held_contract_answer_503_and_others_are_unaffected(
    api: Api, sc: Scenario, db: DBEngine
) -> None:
    token = api.token("act:client", "act:freelancer", "read")
    held, m_held = sc.in_review(10_000)
    free = [sc.in_review(10_000)[1] for _ in range(3)]
    answers: list[int] = []
    with holding(db, held):
        threads = [
            threading.Thread(
                target=lambda: answers.append(
                    api.request(
                        "POST",
                        f"/v1/milestones/{m_held}/events/release",
                        token=token,
                        actor="client:acme",
                    ).status_code
                )
            )
            for _ in range(8)
        ]
        for t in threads:
            t.start()
        for m in free:  # other contracts meanwhile
            got = api.request(
                "POST", f"/v1/milestones/{m}/events/release", token=token, actor="client:acme"
            )
            assert got.status_code == 200, got.text
        for t in threads:
            t.join(60)
        one = api.http.post(
            f"/v1/milestones/{m_held}/events/release",
            headers={
                "Authorization": f"Bearer {token}",
                "Escrowflow-Actor": "client:acme",
                "X-Request-Id": "support-ticket-42",
            },
        )
    assert answers == [503] * 8
    assert one.status_code == 503 and one.headers["Retry-After"] == "1"
    body = one.json()
    assert body["code"] == "database_busy" and "try again" in body["message"]
    # The caller's request id comes back in the body and the header, for the log's sake.
    assert body["request_id"] == one.headers["X-Request-Id"] == "support-ticket-42"
    assert "FATAL" not in one.text and "psycopg" not in one.text
    assert sc.state("milestone", m_held) == "in_review"
    assert [sc.state("milestone", m) for m in free] == ["released"] * 3
