"""Where rules.md is silent: our choices (README, "Rules we chose"), one test each."""

from __future__ import annotations

import pytest

from storage.errors import TransitionRejected
from tests.helpers import CLIENT, FREELANCER, Scenario


def test_x1_client_may_fund_an_offer_but_work_waits_for_acceptance(sc: Scenario) -> None:
    contract, (m,) = sc.offer(10_000)
    sc.fire("milestone", m, "fund", CLIENT)
    assert (
        sc.refused(TransitionRejected, "milestone", m, "submit", FREELANCER)
        == "contract_not_active"
    )
    assert (
        sc.refused(TransitionRejected, "milestone", m, "release", CLIENT) == "contract_not_accepted"
    )
    sc.fire("contract", contract, "accept", FREELANCER)
    sc.fire("milestone", m, "submit", FREELANCER)


def test_x2_any_milestone_not_started_may_be_funded_next(sc: Scenario) -> None:
    _contract, (_a, _b, c) = sc.active_contract(1000, 2000, 3000)
    sc.fire("milestone", c, "fund", CLIENT)
    assert sc.state("milestone", c) == "active"


def test_x3_ended_contract_closes_once_nothing_is_held(sc: Scenario) -> None:
    contract, m = sc.in_review(10_000)
    sc.fire("contract", contract, "end", CLIENT)
    assert sc.state("contract", contract) == "ended"
    sc.wait(days=14)  # the review window still runs after the end (X4)
    assert sc.state("milestone", m) == "released"
    assert sc.state("contract", contract) == "closed"
    assert sc.history("contract", contract)[-1]["event"] == "close"


def test_x4_after_the_end_no_submission_but_release_and_changes_still_possible(
    sc: Scenario,
) -> None:
    contract, (m,) = sc.active_contract(10_000)
    sc.fire("milestone", m, "fund", CLIENT)
    cr = sc.fire("milestone", m, "open_change_request", CLIENT, {"title": "x"})["created"][0]["id"]
    sc.fire("contract", contract, "end", FREELANCER)
    assert sc.state("change_request", cr) == "cancelled"
    with pytest.raises(TransitionRejected):
        sc.fire("milestone", m, "submit", FREELANCER)
    sc.fire("milestone", m, "release", CLIENT, {"amount": 2_000})
    assert sc.row("contract", contract)["credit"] == 8_000


def test_x5_client_cancels_refund_request_and_money_goes_back_where_it_was(
    sc: Scenario,
) -> None:
    contract, (m,) = sc.active_contract(10_000)
    sc.fire("milestone", m, "fund", CLIENT)
    sc.fire("contract", contract, "end", CLIENT)
    refund = sc.fire("contract", contract, "request_refund", CLIENT)["created"][0]["id"]
    sc.fire("refund", refund, "cancel", CLIENT)
    assert sc.state("milestone", m) == "active"
    assert sc.row("milestone", m)["escrow"] == 10_000
    assert sc.pending_deadlines("refund", refund) == []
    sc.check_invariants()


def test_x6_one_open_refund_per_contract_credit_first(sc: Scenario) -> None:
    contract, (m,) = sc.active_contract(10_000)
    sc.fire("milestone", m, "fund", CLIENT)
    sc.fire("milestone", m, "release", CLIENT, {"amount": 4_000})
    refund = sc.fire("contract", contract, "request_refund", CLIENT)["created"][0]["id"]
    assert sc.row("refund", refund)["milestone_id"] is None
    assert (
        sc.refused(TransitionRejected, "contract", contract, "request_refund", CLIENT)
        == "refund_pending"
    )


def test_x7_top_up_during_review_keeps_the_running_window(sc: Scenario) -> None:
    _contract, (m,) = sc.active_contract(10_000)
    sc.fire("milestone", m, "fund", CLIENT)
    cr = sc.fire("milestone", m, "open_change_request", CLIENT, {"amount": 12_000})
    sc.fire("change_request", cr["created"][0]["id"], "accept", FREELANCER)
    sc.fire("milestone", m, "submit", FREELANCER)
    (due,) = [d["due_at"] for d in sc.pending_deadlines("milestone", m)]
    sc.wait(days=3)
    sc.fire("milestone", m, "deposit", CLIENT)
    assert [d["due_at"] for d in sc.pending_deadlines("milestone", m)] == [due]
    sc.wait(days=11)
    assert sc.state("milestone", m) == "released"
    assert sc.row("milestone", m)["released_amount"] == 12_000


def test_x8_waiting_proposal_also_blocks_change_requests(sc: Scenario) -> None:
    contract, (a, b) = sc.active_contract(1000, 2000)
    sc.fire("milestone", a, "fund", CLIENT)
    sc.propose(contract, {"action": "delete", "milestone_id": b})
    assert (
        sc.refused(
            TransitionRejected, "milestone", a, "open_change_request", CLIENT, {"title": "x"}
        )
        == "proposal_pending"
    )
    sc.fire("milestone", a, "release", CLIENT)  # paying is never blocked


def test_x9_withdrawn_offer_cancels_waiting_proposal(sc: Scenario) -> None:
    contract, (_a, b) = sc.offer(1000, 2000)
    proposal = sc.propose(contract, {"action": "delete", "milestone_id": b})["created"][0]["id"]
    sc.fire("contract", contract, "withdraw", CLIENT)
    assert sc.state("proposal", proposal) == "cancelled"


def test_x10_system_role_fires_only_the_engines_own_events(sc: Scenario) -> None:
    """X10: the engine-only events (timers, cascades) cannot be asked for by anyone, not
    even by a caller naming the system role; the timer alone moves the milestone."""
    from storage.errors import PermissionDenied
    from workflows.actors import SYSTEM, Actor, Role
    from workflows.machines import MACHINES

    contract, m = sc.in_review()
    before = sc.snapshot()
    engine_events = [
        (entity, event)
        for entity, machine in MACHINES.items()
        for event, roles in machine.permissions.items()
        if roles == {Role.SYSTEM}
    ]
    assert ("milestone", "auto_approve") in engine_events
    for entity, event in engine_events:
        target = {"contract": contract, "milestone": m}.get(entity, 1)
        for actor in (SYSTEM, Actor(Role.SYSTEM, "mallory")):
            assert (
                sc.refused(PermissionDenied, entity, target, event, actor) == "system_role_reserved"
            )
        if entity in ("contract", "milestone"):  # those exist here: the role is refused
            assert sc.refused(PermissionDenied, entity, target, event, CLIENT) == "role_not_allowed"
    assert sc.snapshot() == before
    assert sc.wait(days=14).fired == 1  # the timer still does
    assert sc.state("milestone", m) == "released"
