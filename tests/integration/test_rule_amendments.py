"""The rules as amended: what an auto-approval pays (MS10), proposals a client can read
and that never block it (FP1, FP2), no caller acting as system (PA1), events that say
what changed (NT1), change requests that change something (CR1)."""

from __future__ import annotations

from typing import Any

import pytest

from storage.errors import PermissionDenied, TransitionRejected, ValidationError
from tests.helpers import CLIENT, FREELANCER, Scenario
from workflows import views
from workflows.actors import Actor, Role


def _decreased(sc: Scenario, funded: int = 5_000, to: int = 3_000) -> tuple[int, int]:
    contract, (m,) = sc.active_contract(funded)
    sc.fire("milestone", m, "fund", CLIENT)
    cr = sc.fire("milestone", m, "open_change_request", CLIENT, {"amount": to})
    sc.fire("change_request", cr["created"][0]["id"], "accept", FREELANCER)
    return contract, m


def _feed(sc: Scenario, contract: int, type_: str) -> list[dict[str, Any]]:
    return [r["data"] for r in sc.rows("outbox_events", contract_id=contract, type=type_)]


def test_ms10_auto_approval_after_accepted_decrease_pays_amount_and_keeps_rest(
    sc: Scenario,
) -> None:
    contract, m = _decreased(sc)
    assert (sc.row("milestone", m)["amount"], sc.row("milestone", m)["escrow"]) == (3_000, 5_000)
    sc.fire("milestone", m, "submit", FREELANCER)
    (prediction,) = views.what_next(sc.db, contract)
    assert prediction["money"]["amount"] == 3_000
    assert prediction["money"]["stays_for_client"] == 2_000
    assert sc.wait(days=14).fired == 1
    assert sc.ledger(contract) == [("deposit", 5_000), ("release", 3_000)]
    row = sc.row("contract", contract)
    assert (row["released"], row["held"], row["credit"]) == (3_000, 2_000, 2_000)  # MS9
    sc.check_invariants()


def test_ms10_x11_auto_approval_pays_what_a_release_without_amount_pays(sc: Scenario) -> None:
    by_hand, m1 = _decreased(sc)
    sc.fire("milestone", m1, "submit", FREELANCER)
    sc.fire("milestone", m1, "release", CLIENT)
    by_timer, m2 = _decreased(sc)
    sc.fire("milestone", m2, "submit", FREELANCER)
    sc.wait(days=14)
    assert sc.ledger(by_hand) == sc.ledger(by_timer) == [("deposit", 5_000), ("release", 3_000)]


def test_ms10_x11_an_increase_never_deposited_is_not_paid_by_auto_approval(sc: Scenario) -> None:
    contract, m = _decreased(sc, funded=5_000, to=8_000)
    sc.fire("milestone", m, "submit", FREELANCER)
    (prediction,) = views.what_next(sc.db, contract)
    assert (prediction["money"]["amount"], prediction["money"]["stays_for_client"]) == (5_000, 0)
    sc.wait(days=14)
    assert sc.ledger(contract) == [("deposit", 5_000), ("release", 5_000)]


def test_fp2_proposal_items_are_readable_before_answering(sc: Scenario) -> None:
    contract, (a, b) = sc.active_contract(1_000, 2_000)
    result = sc.fire(
        "contract",
        contract,
        "propose",
        FREELANCER,
        {
            "items": [
                {"action": "edit", "milestone_id": a, "amount": 1_500, "title": "Design v2"},
                {"action": "delete", "milestone_id": b},
                {"action": "add", "title": "Launch", "amount": 900, "due_date": "2027-01-04"},
            ]
        },
    )
    proposal = result["created"][0]["id"]
    items = views.show(sc.db, "proposal", proposal)["items"]
    assert items == [
        {
            "action": "edit",
            "milestone_id": a,
            "changes": {
                "title": {"before": "Milestone 1", "after": "Design v2"},
                "amount": {"before": 1_000, "after": 1_500},
            },
        },
        {
            "action": "delete",
            "milestone_id": b,
            "changes": {
                "title": {"before": "Milestone 2", "after": None},
                "description": {"before": "", "after": None},
                "due_date": {"before": None, "after": None},
                "amount": {"before": 2_000, "after": None},
            },
        },
        {
            "action": "add",
            "milestone_id": None,
            "changes": {
                "title": {"before": None, "after": "Launch"},
                "description": {"before": None, "after": ""},
                "due_date": {"before": None, "after": "2027-01-04"},
                "amount": {"before": None, "after": 900},
            },
        },
    ]
    (created,) = [h for h in sc.history("proposal", proposal) if h["event"] == "create"]
    assert created["payload"]["items"] == items  # PA3: the history says the same
    (event,) = _feed(sc, contract, "proposal.create")
    assert event["items"] == items  # NT1: and so does the event
    # Accepting applies exactly what was shown.
    sc.fire("proposal", proposal, "accept", CLIENT)
    assert (sc.row("milestone", a)["title"], sc.row("milestone", a)["amount"]) == (
        "Design v2",
        1_500,
    )
    assert sc.state("milestone", b) == "deleted"
    assert views.show(sc.db, "proposal", proposal)["items"] == items  # still as proposed


def test_fp2_x12_proposal_cancelled_with_reason_when_its_milestone_is_funded(sc: Scenario) -> None:
    contract, (a, b) = sc.active_contract(1_000, 2_000)
    proposal = sc.propose(contract, {"action": "edit", "milestone_id": b, "amount": 2_500})[
        "created"
    ][0]["id"]
    sc.fire("milestone", a, "fund", CLIENT)  # another milestone: the proposal still applies
    assert sc.state("proposal", proposal) == "pending"
    sc.fire("milestone", a, "release", CLIENT)
    sc.fire("milestone", b, "fund", CLIENT)  # the one it edits: it can no longer apply
    assert sc.state("proposal", proposal) == "cancelled"
    (cancel,) = [h for h in sc.history("proposal", proposal) if h["event"] == "cancel"]
    assert f"milestone {b} was funded" in cancel["payload"]["reason"]
    assert sc.row("contract", contract)["open_proposal_id"] is None
    # The client is not blocked: it can plan again.
    sc.add_milestones(contract, {"title": "x", "amount": 600})


def test_fp2_x12_ct3_proposal_past_the_limit_is_refused_when_proposed(sc: Scenario) -> None:
    sc.new_terms(max_milestones=3)
    contract, (a, _b) = sc.active_contract(1_000, 2_000)
    before = sc.snapshot()
    add = {"action": "add", "title": "more", "amount": 700}
    with pytest.raises(TransitionRejected) as refused:
        sc.fire("contract", contract, "propose", FREELANCER, {"items": [add, add]})
    assert refused.value.code == "milestone_limit_reached"
    assert "new contract" in refused.value.message
    assert sc.snapshot() == before
    # A deletion makes room (deleted milestones do not count).
    delete = {"action": "delete", "milestone_id": a}
    sc.fire("contract", contract, "propose", FREELANCER, {"items": [delete, add, add]})


def test_fp2_x12_a_milestone_named_twice_is_refused_when_proposed(sc: Scenario) -> None:
    contract, (a,) = sc.active_contract(1_000)
    before = sc.snapshot()
    items = [
        {"action": "edit", "milestone_id": a, "amount": 900},
        {"action": "delete", "milestone_id": a},
    ]
    assert (
        sc.refused(ValidationError, "contract", contract, "propose", FREELANCER, {"items": items})
        == "duplicate_milestone"
    )
    assert sc.snapshot() == before


def test_fp1_ms12_proposal_on_a_started_milestone_names_the_clients_change_request(
    sc: Scenario,
) -> None:
    contract, (a,) = sc.active_contract(1_000)
    sc.fire("milestone", a, "fund", CLIENT)
    with pytest.raises(TransitionRejected) as refused:
        sc.propose(contract, {"action": "edit", "milestone_id": a, "amount": 900})
    assert refused.value.code == "milestone_started"
    assert "client's change request" in refused.value.message
    assert "use a change request" not in refused.value.message


def test_cr1_x13_change_request_identical_to_the_milestone_is_refused(sc: Scenario) -> None:
    _contract, (m,) = sc.active_contract(1_000)
    sc.fire("milestone", m, "fund", CLIENT)
    before = sc.snapshot()
    for same in ({"amount": 1_000}, {"title": "Milestone 1", "amount": 1_000}):
        assert (
            sc.refused(ValidationError, "milestone", m, "open_change_request", CLIENT, same)
            == "nothing_to_change"
        )
    assert sc.snapshot() == before


def test_nt1_change_request_events_carry_every_field_before_and_after(sc: Scenario) -> None:
    contract, (m,) = sc.active_contract(1_000)
    sc.fire("milestone", m, "fund", CLIENT)
    cr = sc.fire(
        "milestone", m, "open_change_request", CLIENT, {"amount": 1_200, "due_date": "2027-02-01"}
    )["created"][0]["id"]
    (created,) = _feed(sc, contract, "change_request.create")
    assert created["changes"] == {
        "due_date": {"before": None, "after": "2027-02-01"},
        "amount": {"before": 1_000, "after": 1_200},
    }
    sc.fire("change_request", cr, "edit", CLIENT, {"title": "Bigger"})
    (edited,) = _feed(sc, contract, "change_request.edit")
    assert edited["changes"]["title"] == {"before": "Milestone 1", "after": "Bigger"}
    assert edited["changes"]["amount"] == {"before": 1_000, "after": 1_200}
    sc.fire("change_request", cr, "accept", FREELANCER)
    (applied,) = _feed(sc, contract, "milestone.apply_change")
    assert set(applied["changes"]) == {"title", "due_date", "amount"}
    (history,) = [h for h in sc.history("milestone", m) if h["event"] == "apply_change"]
    assert history["payload"]["changes"] == applied["changes"]


def test_pa1_no_caller_of_the_engine_acts_as_system(sc: Scenario) -> None:
    contract, m = sc.in_review()
    before = sc.snapshot()
    for event in ("auto_approve", "release", "request_changes"):
        assert (
            sc.refused(PermissionDenied, "milestone", m, event, Actor(Role.SYSTEM, "mallory"))
            == "system_role_reserved"
        )
    assert sc.snapshot() == before
    assert sc.ledger(contract) == [("deposit", 10_000)]


def test_pa1_refusals_never_list_engine_only_events(sc: Scenario) -> None:
    _contract, m = sc.in_review()
    with pytest.raises(TransitionRejected) as refused:
        sc.fire("milestone", m, "fund", CLIENT)
    assert "request_changes" in refused.value.message
    for engine_only in ("auto_approve", "apply_change", "hold_for_refund", "refund", "award"):
        assert engine_only not in refused.value.message
    from storage.errors import NotFound

    with pytest.raises(NotFound) as unknown:
        sc.fire("milestone", m, "approve", CLIENT)
    assert "release" in unknown.value.message and "hold_for_refund" not in unknown.value.message
    shown = views.show(sc.db, "milestone", m)["allowed_events"]  # what `show` lists
    assert "system" not in shown and shown["client"] == ["request_changes", "release", "deposit"]
