"""Deadlines are data: the dispute team pauses, resumes or extends one, with a reason."""

from __future__ import annotations

from datetime import timedelta

import pytest

from storage.errors import PermissionDenied, TransitionRejected, ValidationError
from tests.helpers import ADMIN, CLIENT, Scenario
from workflows import views


def _deadline(sc: Scenario, milestone: int) -> int:
    (deadline,) = sc.pending_deadlines("milestone", milestone)
    return int(deadline["id"])


def test_paused_deadline_does_not_fire_until_resumed(sc: Scenario) -> None:
    contract, m = sc.in_review(10_000)
    deadline = _deadline(sc, m)
    sc.engine.adjust_deadline(deadline, "pause", ADMIN, "client reported fraud")
    assert sc.wait(days=30).fired == 0
    assert sc.state("milestone", m) == "in_review"
    sc.engine.adjust_deadline(deadline, "resume", ADMIN, "checked: no fraud")
    assert sc.wait(days=14, seconds=-1).fired == 0  # DL1: the 14 days it had left
    assert sc.wait(seconds=1).fired == 1
    assert sc.ledger(contract)[-1] == ("release", 10_000)
    rows = sc.history("deadline", deadline)
    assert [
        (r["event"], r["from_state"], r["to_state"], r["actor_role"], r["version"]) for r in rows
    ] == [("pause", "pending", "paused", "admin", 1), ("resume", "paused", "pending", "admin", 2)]
    assert rows[0]["payload"]["reason"] == "client reported fraud"
    assert "deadline.pause" in sc.events(contract)
    sc.check_invariants()


def test_extended_deadline_fires_later(sc: Scenario) -> None:
    _contract, m = sc.in_review(10_000)
    deadline = _deadline(sc, m)
    result = sc.engine.adjust_deadline(deadline, "extend", ADMIN, "holiday", timedelta(days=3))
    assert sc.pending_deadlines("milestone", m)[0]["due_at"].isoformat() == result["due_at"]
    assert sc.wait(days=16).fired == 0
    assert sc.wait(days=1).fired == 1
    assert sc.state("milestone", m) == "released"


def test_only_admin_with_a_reason_and_only_pending_deadlines(sc: Scenario) -> None:
    _contract, m = sc.in_review(10_000)
    deadline = _deadline(sc, m)
    before = sc.snapshot()
    with pytest.raises(PermissionDenied):
        sc.engine.adjust_deadline(deadline, "pause", CLIENT, "mine")
    with pytest.raises(ValidationError) as refused:
        sc.engine.adjust_deadline(deadline, "pause", ADMIN, "  ")
    assert refused.value.code == "field_required"
    with pytest.raises(TransitionRejected):
        sc.engine.adjust_deadline(deadline, "resume", ADMIN, "not paused")
    with pytest.raises(ValidationError):
        sc.engine.adjust_deadline(deadline, "extend", ADMIN, "back", timedelta(days=-1))
    assert sc.snapshot() == before
    sc.fire("milestone", m, "release", CLIENT)
    with pytest.raises(TransitionRejected):
        sc.engine.adjust_deadline(deadline, "pause", ADMIN, "too late")


def test_dl1_a_paused_deadline_keeps_the_time_it_had_left(sc: Scenario) -> None:
    start = sc.clock.now()
    contract, m = sc.in_review(10_000)  # due on day 14
    deadline = _deadline(sc, m)
    sc.clock.advance(timedelta(days=4))
    sc.engine.adjust_deadline(deadline, "pause", ADMIN, "payment provider outage")
    (shown,) = [n for n in views.what_next(sc.db, contract) if n["deadline_id"] == deadline]
    assert (shown["paused"], shown["left"]) == (True, "P10D")
    assert sc.wait(days=20).fired == 0  # day 24: long past its due date, it waits
    resumed = sc.engine.adjust_deadline(deadline, "resume", ADMIN, "provider is back")
    assert resumed["due_at"] == (start + timedelta(days=34)).isoformat()  # day 24 + 10
    (row,) = sc.pending_deadlines("milestone", m)
    assert row["paused_at"] is None and row["paused_left_ms"] is None
    assert sc.wait(days=10, seconds=-1).fired == 0
    assert sc.wait(seconds=1).fired == 1
    assert sc.state("milestone", m) == "released"
    pause, resume = sc.history("deadline", deadline)
    assert (pause["payload"]["left"], resume["payload"]["left"]) == ("P10D", "P10D")
    assert resume["payload"]["due_at"] == str(start + timedelta(days=34))
    sc.check_invariants()


def test_dl1_an_extension_while_paused_adds_to_the_time_left(sc: Scenario) -> None:
    start = sc.clock.now()
    _contract, m = sc.in_review(10_000)
    deadline = _deadline(sc, m)
    sc.engine.adjust_deadline(deadline, "pause", ADMIN, "fraud check")
    sc.engine.adjust_deadline(deadline, "extend", ADMIN, "holiday", timedelta(days=2))
    sc.clock.advance(timedelta(days=5))
    resumed = sc.engine.adjust_deadline(deadline, "resume", ADMIN, "checked")
    assert resumed["due_at"] == (start + timedelta(days=5 + 14 + 2)).isoformat()
