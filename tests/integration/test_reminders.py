"""NT2: before a deadline fires, the party who can still act is reminded, once; a
reminder changes no state and follows its deadline when it is cancelled, paused, moved."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from escrowflow.settings import Settings
from storage.errors import TransitionRejected
from tests.helpers import ADMIN, CLIENT, FREELANCER, Scenario
from workflows import views
from workflows.policy import DEFAULT_REMINDERS, Policy


@pytest.fixture
def policy() -> Policy:
    return Policy()  # the default reminders, on (other tests turn them off)


def _reminders(sc: Scenario, contract: int) -> list[dict[str, Any]]:
    return [
        r for r in sc.rows("outbox_events", contract_id=contract) if r["type"].endswith(".reminder")
    ]


def _main_deadline(sc: Scenario, entity: str, entity_id: int) -> int:
    (main,) = [d["id"] for d in sc.pending_deadlines(entity, entity_id) if ":" not in d["event"]]
    return int(main)


def test_nt2_reminders_3_days_and_1_day_before_an_auto_approval_once_each(
    sc: Scenario,
) -> None:
    contract, m = sc.in_review(10_000)
    submitted = sc.clock.now()
    version = sc.row("milestone", m)["version"]
    sc.wait(days=10, hours=23)
    assert _reminders(sc, contract) == []
    sc.wait(hours=1)  # 3 days before the auto-approval
    (first,) = _reminders(sc, contract)
    assert first["type"] == "milestone.reminder" and first["recipients"] == ["acme"]
    assert first["data"]["event"] == "auto_approve"
    assert first["data"]["due_at"] == (submitted + timedelta(days=14)).isoformat()
    assert first["data"]["party"] == {"role": "client", "id": "acme"}
    assert (first["data"]["amount_at_stake"], first["data"]["currency"]) == (10_000, "USD")
    row = sc.row("milestone", m)
    assert (row["state"], row["version"]) == ("in_review", version)  # nothing moved
    assert sc.ledger(contract) == [("deposit", 10_000)]
    sc.wait(days=2)  # 1 day before
    assert len(_reminders(sc, contract)) == 2
    sc.wait(days=1)
    assert sc.state("milestone", m) == "released"
    sc.wait(days=30)
    reminders = _reminders(sc, contract)
    assert len(reminders) == 2, "a reminder was sent twice"
    history = [h["event"] for h in sc.history("milestone", m)]
    assert history.count("reminder") == 2 and history[-1] == "auto_approve"
    sc.check_invariants()


def test_nt2_request_changes_before_the_first_reminder_cancels_both(sc: Scenario) -> None:
    contract, m = sc.in_review(10_000)
    assert len(sc.pending_deadlines("milestone", m)) == 3  # the timer and its two reminders
    sc.wait(days=5)
    sc.fire("milestone", m, "request_changes", CLIENT)
    assert sc.pending_deadlines("milestone", m) == []
    sc.wait(days=30)
    assert _reminders(sc, contract) == []
    sc.fire("milestone", m, "submit", FREELANCER)  # a new review: new reminders
    sc.wait(days=11)
    assert len(_reminders(sc, contract)) == 1


def test_nt2_dl1_a_pause_holds_reminders_and_resume_schedules_them_from_the_time_left(
    sc: Scenario,
) -> None:
    contract, m = sc.in_review(10_000)
    deadline = _main_deadline(sc, "milestone", m)
    sc.wait(days=1)  # 13 days left
    sc.engine.adjust_deadline(deadline, "pause", ADMIN, "fraud check")
    assert [d["id"] for d in sc.pending_deadlines("milestone", m)] == [deadline]
    sc.wait(days=11, hours=12)  # past the 3-day reminder's old time: not sent while paused
    assert _reminders(sc, contract) == []
    sc.engine.adjust_deadline(deadline, "resume", ADMIN, "checked")  # due in 13 days
    ahead = [d["event"] for d in sc.pending_deadlines("milestone", m) if d["id"] != deadline]
    assert ahead == ["remind:auto_approve:P3D", "remind:auto_approve:P1D"]
    sc.wait(days=10)
    assert [r["data"]["event"] for r in _reminders(sc, contract)] == ["auto_approve"]
    sc.wait(days=2)
    assert len(_reminders(sc, contract)) == 2
    assert sc.state("milestone", m) == "in_review"
    sc.wait(days=1)
    assert sc.state("milestone", m) == "released"


def test_nt2_an_extension_moves_the_reminders_with_the_deadline(sc: Scenario) -> None:
    contract, m = sc.in_review(10_000)
    deadline = _main_deadline(sc, "milestone", m)
    sc.engine.adjust_deadline(deadline, "extend", ADMIN, "holiday", timedelta(days=3))
    sc.wait(days=11)  # the old 3-day reminder's time: nothing
    assert _reminders(sc, contract) == []
    sc.wait(days=3)  # 3 days before the new due time
    (first,) = _reminders(sc, contract)
    (moved,) = sc.rows("deadlines", id=deadline)
    assert first["data"]["due_at"] == moved["due_at"].isoformat()
    sc.wait(days=2)
    assert len(_reminders(sc, contract)) == 2
    with pytest.raises(TransitionRejected) as refused:
        reminder = sc.rows("deadlines", contract_id=contract)[-1]["id"]
        sc.engine.adjust_deadline(reminder, "pause", ADMIN, "no")
    assert refused.value.code in ("reminder_not_adjustable", "event_not_allowed_in_state")


def test_nt2_a_default_refund_reminds_the_freelancer_and_an_expiry_one_day_before(
    sc: Scenario,
) -> None:
    contract, (m,) = sc.active_contract(10_000)
    sc.fire("milestone", m, "fund", CLIENT)
    request = sc.fire("milestone", m, "open_change_request", CLIENT, {"amount": 8_000})
    change = request["created"][0]["id"]
    sc.wait(days=5, hours=23)
    assert _reminders(sc, contract) == []
    sc.wait(hours=1)
    (expiry,) = _reminders(sc, contract)
    assert (expiry["type"], expiry["recipients"]) == ("change_request.reminder", ["ada"])
    assert (expiry["data"]["event"], expiry["data"]["amount_at_stake"]) == ("expire", 8_000)
    sc.wait(days=1)
    assert sc.state("change_request", change) == "expired"
    sc.fire("contract", contract, "end", CLIENT)
    refund = sc.fire("contract", contract, "request_refund", CLIENT, {"reason": "late"})
    refund_id = refund["created"][0]["id"]
    sc.wait(days=4)
    reminder = _reminders(sc, contract)[-1]
    assert (reminder["type"], reminder["recipients"]) == ("refund.reminder", ["ada"])
    assert reminder["data"]["party"] == {"role": "freelancer", "id": "ada"}
    assert reminder["data"]["amount_at_stake"] == sc.row("refund", refund_id)["amount"]


def test_nt2_reminders_appear_in_next_with_who_is_told(sc: Scenario) -> None:
    contract, _m = sc.in_review(10_000)
    upcoming = views.what_next(sc.db, contract)
    assert [n["event"] for n in upcoming] == [
        "remind:auto_approve:P3D",
        "remind:auto_approve:P1D",
        "auto_approve",
    ]
    assert upcoming[0]["reminds"] == {
        "role": "client",
        "id": "acme",
        "of": "auto_approve",
        "before": "P3D",
    }
    assert upcoming[0]["money"] is None and "reminder to client acme" in upcoming[0]["summary"]
    assert upcoming[2]["money"]["amount"] == 10_000


def test_nt2_the_reminders_setting_is_json_by_timer_and_an_empty_list_turns_them_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().policy().reminders == DEFAULT_REMINDERS
    monkeypatch.setenv("ESCROWFLOW_REMINDERS", "[]")
    assert Settings().policy().reminders == {}
    monkeypatch.setenv("ESCROWFLOW_REMINDERS", '{"review_window": ["P2D", "PT6H"]}')
    assert Settings().policy().reminders == {
        "review_window": (timedelta(days=2), timedelta(hours=6))
    }
