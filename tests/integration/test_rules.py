"""One test (at least) per rule of rules.md, named after its ID, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from storage.db import transaction
from storage.errors import (
    NotFound,
    PermissionDenied,
    TransitionRejected,
    ValidationError,
)
from storage.models import CONTRACTS, MILESTONES
from tests.helpers import ADMIN, CLIENT, FREELANCER, STRANGER, Scenario
from workflows.actors import SYSTEM, Actor, Role

# -- contracts ----------------------------------------------------------------------


def test_ct1_milestones_only_on_fixed_price_contracts(sc: Scenario) -> None:
    contract, _ = sc.offer(kind="hourly")
    before = sc.snapshot()
    with pytest.raises(TransitionRejected) as refused:
        sc.add_milestones(contract, {"title": "Design", "amount": 10_000})
    assert refused.value.code == "not_fixed_price"
    assert sc.snapshot() == before
    with pytest.raises(TransitionRejected, match="fixed-price"):
        sc.engine.create_contract(
            CLIENT,
            {
                "freelancer_id": "ada",
                "title": "T",
                "currency": "USD",
                "kind": "hourly",
                "milestones": [{"title": "x", "amount": 900}],
            },
        )


def test_ct2_offer_accepted_by_freelancer(sc: Scenario) -> None:
    contract, _ = sc.offer(10_000)
    assert sc.state("contract", contract) == "offer"
    sc.fire("contract", contract, "accept", FREELANCER)
    assert sc.state("contract", contract) == "active"


@pytest.mark.parametrize(("event", "actor"), [("withdraw", CLIENT), ("decline", FREELANCER)])
def test_ct2_withdrawn_or_declined_offer_returns_escrow_in_full(
    sc: Scenario, event: str, actor: Actor
) -> None:
    contract, (first, _second) = sc.offer(10_000, 20_000)
    sc.fire("milestone", first, "fund", CLIENT)
    sc.fire("contract", contract, event, actor)
    assert sc.state("contract", contract) == {"withdraw": "withdrawn", "decline": "declined"}[event]
    assert sc.ledger(contract) == [("deposit", 10_000), ("refund", 10_000)]
    assert sc.state("milestone", first) == "refunded"
    row = sc.row("contract", contract)
    assert (row["held"], row["refunded"]) == (0, 10_000)
    sc.check_invariants()


def test_ct2_only_freelancer_accepts_and_only_client_withdraws(sc: Scenario) -> None:
    contract, _ = sc.offer(10_000)
    with pytest.raises(PermissionDenied):
        sc.fire("contract", contract, "accept", CLIENT)
    with pytest.raises(PermissionDenied):
        sc.fire("contract", contract, "withdraw", FREELANCER)


def test_ct3_two_hundred_milestones_at_most(sc: Scenario) -> None:
    contract, _ = sc.active_contract()
    sc.add_milestones(contract, *({"title": f"M{i}", "amount": 500} for i in range(200)))
    before = sc.snapshot()
    with pytest.raises(TransitionRejected) as refused:
        sc.add_milestones(contract, {"title": "M201", "amount": 500})
    assert refused.value.code == "milestone_limit_reached"
    assert "new contract" in refused.value.message
    assert sc.snapshot() == before


def test_ct3_deleted_future_milestones_do_not_count(sc: Scenario, policy: object) -> None:
    contract, milestones = sc.active_contract(*[500] * 200)
    sc.fire("milestone", milestones[0], "fund", CLIENT)
    sc.fire("milestone", milestones[1], "delete", CLIENT)
    sc.add_milestones(contract, {"title": "replacement", "amount": 500})
    with pytest.raises(TransitionRejected, match="limit"):
        sc.add_milestones(contract, {"title": "one too many", "amount": 500})


def test_ct4_either_party_ends_and_escrow_stays_held(sc: Scenario) -> None:
    contract, (milestone,) = sc.active_contract(10_000)
    sc.fire("milestone", milestone, "fund", CLIENT)
    sc.fire("contract", contract, "end", FREELANCER)
    assert sc.state("contract", contract) == "ended"
    assert sc.row("contract", contract)["held"] == 10_000
    assert sc.state("milestone", milestone) == "active"
    # Held until released (MS8) ...
    sc.fire("milestone", milestone, "release", CLIENT)
    assert sc.ledger(contract)[-1] == ("release", 10_000)
    # ... and with nothing left, the contract closes (X3).
    assert sc.state("contract", contract) == "closed"


def test_ct4_client_may_end_too(sc: Scenario) -> None:
    contract, _ = sc.active_contract(10_000)
    sc.fire("contract", contract, "end", CLIENT)
    assert sc.state("contract", contract) == "closed"  # nothing was held (X3)


# -- milestones ---------------------------------------------------------------------


def test_ms1_milestone_has_title_description_due_date_and_minimum_amount(sc: Scenario) -> None:
    contract, _ = sc.active_contract()
    result = sc.fire(
        "contract",
        contract,
        "add_milestones",
        CLIENT,
        {
            "milestones": [
                {
                    "title": "Design",
                    "description": "Wireframes",
                    "due_date": "2026-03-01",
                    "amount": 500,
                }
            ]
        },
    )
    milestone = sc.row("milestone", result["created"][0]["id"])
    assert (
        milestone["title"],
        milestone["description"],
        str(milestone["due_date"]),
        milestone["amount"],
    ) == ("Design", "Wireframes", "2026-03-01", 500)
    for bad, code in [
        (499, "amount_below_minimum"),
        (0, "amount_not_positive"),
        (-500, "amount_not_positive"),
        (500.0, "amount_not_integer"),
        ("500", "amount_not_integer"),
    ]:
        with pytest.raises(ValidationError) as refused:
            sc.add_milestones(contract, {"title": "x", "amount": bad})
        assert refused.value.code == code
    with pytest.raises(ValidationError, match="title"):
        sc.fire("contract", contract, "add_milestones", CLIENT, {"milestones": [{"amount": 900}]})


def test_ms1_minimum_is_per_currency(sc: Scenario) -> None:
    contract, _ = sc.offer(currency="JPY")
    with pytest.raises(ValidationError, match="minimum"):
        sc.add_milestones(contract, {"title": "x", "amount": 4})
    sc.add_milestones(contract, {"title": "x", "amount": 5})


def test_ms2_milestones_ordered_and_created_all_or_none(sc: Scenario) -> None:
    contract, milestones = sc.active_contract(1000, 2000, 3000)
    assert [sc.row("milestone", m)["position"] for m in milestones] == [1, 2, 3]
    before = sc.snapshot()
    with pytest.raises(ValidationError) as refused:
        sc.add_milestones(contract, {"title": "ok", "amount": 1000}, {"title": "bad", "amount": 1})
    assert refused.value.details["index"] == 1
    assert sc.snapshot() == before


def test_ms3_client_edits_deletes_reorders_future_milestones(sc: Scenario) -> None:
    contract, (a, b, c, d) = sc.active_contract(1000, 2000, 3000, 4000)
    sc.fire("milestone", a, "fund", CLIENT)
    sc.fire("milestone", b, "edit", CLIENT, {"title": "Renamed", "amount": 2500})
    assert (sc.row("milestone", b)["title"], sc.row("milestone", b)["amount"]) == ("Renamed", 2500)
    sc.fire("milestone", c, "delete", CLIENT)
    assert sc.state("milestone", c) == "deleted"
    sc.fire("contract", contract, "reorder_milestones", CLIENT, {"order": [d, b]})
    positions = {m: sc.row("milestone", m)["position"] for m in (a, b, d)}
    assert positions[a] == 1  # the active one keeps its place
    assert positions[d] < positions[b]
    assert (
        sc.refused(
            ValidationError,
            "contract",
            contract,
            "reorder_milestones",
            CLIENT,
            {"order": [a, b, d]},
        )
        == "invalid_order"
    )


def test_ms4_one_active_milestone_and_no_funding_ahead(sc: Scenario) -> None:
    _contract, (a, b) = sc.active_contract(1000, 2000)
    sc.fire("milestone", a, "fund", CLIENT)
    before = sc.snapshot()
    assert (
        sc.refused(TransitionRejected, "milestone", b, "fund", CLIENT) == "milestone_already_active"
    )
    assert sc.snapshot() == before
    sc.fire("milestone", a, "release", CLIENT)
    sc.fire("milestone", b, "fund", CLIENT)
    assert sc.state("milestone", b) == "active"


def test_ms4_database_refuses_a_second_active_milestone_too(sc: Scenario) -> None:
    from storage.errors import ConflictError

    _contract, (a, b) = sc.active_contract(1000, 2000)
    sc.fire("milestone", a, "fund", CLIENT)
    table = MILESTONES
    with pytest.raises(ConflictError), transaction(sc.db) as conn:
        conn.execute(table.update().where(table.c.id == b).values(state="active"))


def test_ms5_funding_deposits_amount_counting_leftover_escrow(sc: Scenario) -> None:
    contract, (a, b) = sc.active_contract(10_000, 8_000)
    sc.fire("milestone", a, "fund", CLIENT)
    assert sc.ledger(contract) == [("deposit", 10_000)]
    assert sc.state("milestone", a) == "active"
    sc.fire("milestone", a, "release", CLIENT, {"amount": 7_000})  # 3,000 left over (MS9)
    sc.fire("milestone", b, "fund", CLIENT)
    assert sc.ledger(contract)[-1] == ("deposit", 5_000)
    assert sc.row("milestone", b)["escrow"] == 8_000
    sc.check_invariants()


def test_ms6_freelancer_submits_active_milestone_for_review(sc: Scenario) -> None:
    _contract, (m,) = sc.active_contract(10_000)
    sc.fire("milestone", m, "fund", CLIENT)
    with pytest.raises(PermissionDenied):
        sc.fire("milestone", m, "submit", CLIENT)
    sc.fire("milestone", m, "submit", FREELANCER)
    assert sc.state("milestone", m) == "in_review"
    assert [d["event"] for d in sc.pending_deadlines("milestone", m)] == ["auto_approve"]


def test_ms7_changes_requested_stop_the_clock_and_resubmission_restarts_it(sc: Scenario) -> None:
    _contract, m = sc.in_review()
    sc.clock.advance(__import__("datetime").timedelta(days=10))
    sc.fire("milestone", m, "request_changes", CLIENT)
    assert sc.state("milestone", m) == "active"
    assert sc.pending_deadlines("milestone", m) == []
    sc.wait(days=30)  # the clock is stopped while the freelancer works
    assert sc.state("milestone", m) == "active"
    sc.fire("milestone", m, "submit", FREELANCER)
    (deadline,) = sc.pending_deadlines("milestone", m)
    assert deadline["due_at"] == sc.clock.now() + __import__("datetime").timedelta(days=14)
    sc.wait(days=13, hours=23)
    assert sc.state("milestone", m) == "in_review"
    sc.wait(hours=1)
    assert sc.state("milestone", m) == "released"


def test_ms8_release_full_partial_over_and_before_submission(sc: Scenario) -> None:
    contract, (a, b, c) = sc.active_contract(10_000, 10_000, 10_000)
    sc.fire("milestone", a, "fund", CLIENT)
    sc.fire("milestone", a, "release", CLIENT)  # before any submission
    sc.fire("milestone", b, "fund", CLIENT)
    sc.fire("milestone", b, "submit", FREELANCER)
    sc.fire("milestone", b, "release", CLIENT, {"amount": 12_500})  # more: 2,500 deposited
    sc.fire("milestone", c, "fund", CLIENT)
    sc.fire("milestone", c, "release", CLIENT, {"amount": 4_000})  # partial
    assert sc.ledger(contract) == [
        ("deposit", 10_000),
        ("release", 10_000),
        ("deposit", 10_000),
        ("deposit", 2_500),
        ("release", 12_500),
        ("deposit", 10_000),
        ("release", 4_000),
    ]
    assert sc.row("milestone", b)["released_amount"] == 12_500
    assert sc.row("contract", contract)["credit"] == 6_000
    sc.check_invariants()


def test_ms9_remainder_after_partial_release_can_be_refunded(sc: Scenario) -> None:
    contract, (a,) = sc.active_contract(10_000)
    sc.fire("milestone", a, "fund", CLIENT)
    sc.fire("milestone", a, "release", CLIENT, {"amount": 6_000})
    result = sc.fire("contract", contract, "request_refund", CLIENT)
    (refund,) = [c["id"] for c in result["created"] if c["entity"] == "refund"]
    assert sc.row("refund", refund)["amount"] == 4_000
    sc.fire("refund", refund, "approve", FREELANCER)
    assert sc.ledger(contract)[-1] == ("refund", 4_000)
    assert sc.row("contract", contract)["held"] == 0
    sc.check_invariants()


def test_ms10_review_window_auto_releases_full_escrow(sc: Scenario) -> None:
    contract, m = sc.in_review(10_000)
    report = sc.wait(days=14)
    assert report.fired == 1
    assert sc.state("milestone", m) == "released"
    assert sc.ledger(contract) == [("deposit", 10_000), ("release", 10_000)]
    last = sc.history("milestone", m)[-1]
    assert (last["event"], last["actor_role"], last["cause"]) == ("auto_approve", "system", "timer")
    assert last["due_at"] is not None
    assert "milestone.auto_approve" in sc.events(contract)
    assert sc.wait(days=30).fired == 0  # never twice


def test_ms11_passing_a_due_date_changes_nothing(sc: Scenario) -> None:
    contract, _ = sc.active_contract()
    result = sc.add_milestones(
        contract, {"title": "Design", "amount": 1000, "due_date": "2026-01-06"}
    )
    m = result["created"][0]["id"]
    sc.fire("milestone", m, "fund", CLIENT)
    before = sc.row("milestone", m)
    assert sc.pending_deadlines("milestone", m) == []
    sc.wait(days=365)
    assert sc.row("milestone", m) == before


def test_ms12_active_milestone_not_edited_directly(sc: Scenario) -> None:
    _contract, (m,) = sc.active_contract(10_000)
    sc.fire("milestone", m, "fund", CLIENT)
    before = sc.snapshot()
    assert (
        sc.refused(TransitionRejected, "milestone", m, "edit", CLIENT, {"amount": 20_000})
        == "event_not_allowed_in_state"
    )
    assert sc.snapshot() == before


def test_ms13_freelancer_never_edits_milestones_directly(sc: Scenario) -> None:
    contract, (m,) = sc.active_contract(10_000)
    for event, payload in [("edit", {"title": "mine"}), ("delete", {})]:
        assert (
            sc.refused(PermissionDenied, "milestone", m, event, FREELANCER, payload)
            == "role_not_allowed"
        )
    with pytest.raises(PermissionDenied):
        sc.fire(
            "contract",
            contract,
            "add_milestones",
            FREELANCER,
            {"milestones": [{"title": "x", "amount": 1000}]},
        )


# -- change requests ---------------------------------------------------------------


def _open_change(sc: Scenario, milestone: int, **fields: object) -> int:
    result = sc.fire("milestone", milestone, "open_change_request", CLIENT, dict(fields))
    return int(result["created"][0]["id"])


def test_cr1_one_pending_request_and_not_after_submission(sc: Scenario) -> None:
    _contract, (m,) = sc.active_contract(10_000)
    sc.fire("milestone", m, "fund", CLIENT)
    _open_change(sc, m, title="New title")
    with pytest.raises(TransitionRejected) as refused:
        _open_change(sc, m, title="Another")
    assert refused.value.code == "change_request_pending"
    _contract2, m2 = sc.in_review()
    with pytest.raises(TransitionRejected) as refused:
        _open_change(sc, m2, title="Too late")
    assert refused.value.code == "event_not_allowed_in_state"


def test_cr2_client_edits_or_withdraws_until_answered(sc: Scenario) -> None:
    _contract, (m,) = sc.active_contract(10_000)
    sc.fire("milestone", m, "fund", CLIENT)
    cr = _open_change(sc, m, amount=12_000)
    sc.fire("change_request", cr, "edit", CLIENT, {"amount": 15_000})
    assert sc.row("change_request", cr)["amount"] == 15_000
    sc.fire("change_request", cr, "withdraw", CLIENT)
    assert sc.state("change_request", cr) == "withdrawn"
    assert sc.row("milestone", m)["amount"] == 10_000
    cr2 = _open_change(sc, m, title="x")
    sc.fire("change_request", cr2, "reject", FREELANCER)
    with pytest.raises(TransitionRejected):
        sc.fire("change_request", cr2, "edit", CLIENT, {"title": "y"})


def test_cr3_accepted_request_applies_and_higher_amount_needs_deposit(sc: Scenario) -> None:
    contract, (m,) = sc.active_contract(10_000)
    sc.fire("milestone", m, "fund", CLIENT)
    cr = _open_change(sc, m, title="Bigger", amount=15_000, due_date="2026-02-01")
    sc.fire("change_request", cr, "accept", FREELANCER)
    row = sc.row("milestone", m)
    assert (row["title"], row["amount"], row["escrow"]) == ("Bigger", 15_000, 10_000)
    assert str(row["due_date"]) == "2026-02-01"
    sc.fire("milestone", m, "deposit", CLIENT)
    assert sc.row("milestone", m)["escrow"] == 15_000
    assert sc.ledger(contract) == [("deposit", 10_000), ("deposit", 5_000)]
    sc.check_invariants()


def test_cr3_release_larger_than_held_deposits_the_difference(sc: Scenario) -> None:
    contract, (m,) = sc.active_contract(10_000)
    sc.fire("milestone", m, "fund", CLIENT)
    cr = _open_change(sc, m, amount=15_000)
    sc.fire("change_request", cr, "accept", FREELANCER)
    # The new amount, 15,000, named: a release without an amount pays only what is held
    # (MS10), so paying the increase is the client's explicit choice.
    sc.fire("milestone", m, "release", CLIENT, {"amount": 15_000})
    assert sc.ledger(contract) == [("deposit", 10_000), ("deposit", 5_000), ("release", 15_000)]


def test_cr3_auto_approval_releases_what_is_held(sc: Scenario) -> None:
    contract, (m,) = sc.active_contract(10_000)
    sc.fire("milestone", m, "fund", CLIENT)
    cr = _open_change(sc, m, amount=15_000)
    sc.fire("change_request", cr, "accept", FREELANCER)
    sc.fire("milestone", m, "submit", FREELANCER)
    sc.wait(days=14)
    assert sc.ledger(contract)[-1] == ("release", 10_000)
    sc.check_invariants()


def test_cr4_rejected_request_leaves_milestone_as_it_was(sc: Scenario) -> None:
    _contract, (m,) = sc.active_contract(10_000)
    sc.fire("milestone", m, "fund", CLIENT)
    before = sc.row("milestone", m)
    cr = _open_change(sc, m, amount=20_000, title="Other")
    sc.fire("change_request", cr, "reject", FREELANCER)
    after = sc.row("milestone", m)
    assert {k: after[k] for k in ("title", "amount", "escrow")} == {
        k: before[k] for k in ("title", "amount", "escrow")
    }
    assert sc.state("change_request", cr) == "rejected"


@pytest.mark.parametrize("action", ["submit", "release"])
def test_cr5_pending_request_cancelled_by_submission_or_release(sc: Scenario, action: str) -> None:
    _contract, (m,) = sc.active_contract(10_000)
    sc.fire("milestone", m, "fund", CLIENT)
    cr = _open_change(sc, m, title="x")
    sc.fire("milestone", m, action, FREELANCER if action == "submit" else CLIENT)
    assert sc.state("change_request", cr) == "cancelled"
    assert sc.pending_deadlines("change_request", cr) == []
    cancel = sc.history("change_request", cr)[-1]
    assert cancel["caused_by"] == sc.history("milestone", m)[-1]["id"]
    assert sc.row("milestone", m)["open_change_request_id"] is None


def test_cr6_unanswered_request_expires(sc: Scenario) -> None:
    _contract, (m,) = sc.active_contract(10_000)
    sc.fire("milestone", m, "fund", CLIENT)
    cr = _open_change(sc, m, amount=20_000)
    sc.wait(days=6, hours=23)
    assert sc.state("change_request", cr) == "pending"
    sc.wait(hours=1)
    assert sc.state("change_request", cr) == "expired"
    assert sc.row("milestone", m)["amount"] == 10_000
    assert sc.history("change_request", cr)[-1]["cause"] == "timer"
    _open_change(sc, m, title="a new one is possible again")


def test_cr6_edit_gives_the_freelancer_a_full_lifetime_again(sc: Scenario) -> None:
    _contract, (m,) = sc.active_contract(10_000)
    sc.fire("milestone", m, "fund", CLIENT)
    cr = _open_change(sc, m, amount=20_000)
    sc.wait(days=5)
    sc.fire("change_request", cr, "edit", CLIENT, {"amount": 25_000})
    sc.wait(days=5)
    assert sc.state("change_request", cr) == "pending"
    sc.wait(days=2)
    assert sc.state("change_request", cr) == "expired"


# -- freelancer proposals ----------------------------------------------------------


def _propose(sc: Scenario, contract: int, items: list[dict[str, object]]) -> int:
    return int(sc.propose(contract, *items)["created"][0]["id"])


def _add_edit_delete(edited: int, deleted: int) -> list[dict[str, object]]:
    """A proposal of three items: add a milestone, raise one, delete another."""
    return [
        {"action": "add", "title": "Extra", "amount": 4000},
        {"action": "edit", "milestone_id": edited, "amount": 2500},
        {"action": "delete", "milestone_id": deleted},
    ]


def test_fp1_freelancer_proposes_several_changes_to_future_milestones(sc: Scenario) -> None:
    contract, (a, b, c) = sc.active_contract(1000, 2000, 3000)
    sc.fire("milestone", a, "fund", CLIENT)
    proposal = _propose(sc, contract, _add_edit_delete(b, c))
    assert sc.state("proposal", proposal) == "pending"
    assert "proposal.create" in sc.events(contract)
    with pytest.raises(TransitionRejected) as refused:
        sc.propose(contract, {"action": "edit", "milestone_id": a, "amount": 900})
    assert refused.value.code in ("proposal_pending", "milestone_started")


def test_fp1_proposal_cannot_touch_started_milestones(sc: Scenario) -> None:
    contract, (a, _b) = sc.active_contract(1000, 2000)
    sc.fire("milestone", a, "fund", CLIENT)
    with pytest.raises(TransitionRejected) as refused:
        _propose(sc, contract, [{"action": "edit", "milestone_id": a, "amount": 900}])
    assert refused.value.code == "milestone_started"


def test_fp2_accept_applies_every_change_together(sc: Scenario) -> None:
    contract, (_a, b, c) = sc.active_contract(1000, 2000, 3000)
    proposal = _propose(sc, contract, _add_edit_delete(b, c))
    sc.fire("proposal", proposal, "accept", CLIENT)
    assert sc.row("milestone", b)["amount"] == 2500
    assert sc.state("milestone", c) == "deleted"
    titles = [m["title"] for m in sc.rows("milestones", contract_id=contract)]
    assert "Extra" in titles


def test_fp2_decline_applies_none(sc: Scenario) -> None:
    contract, (_a, b) = sc.active_contract(1000, 2000)
    proposal = _propose(
        sc,
        contract,
        [
            {"action": "edit", "milestone_id": b, "amount": 2500},
            {"action": "add", "title": "Extra", "amount": 4000},
        ],
    )
    sc.fire("proposal", proposal, "decline", CLIENT)
    assert sc.row("milestone", b)["amount"] == 2000
    assert len(sc.rows("milestones", contract_id=contract)) == 2


def test_fp2_accept_fails_whole_if_one_change_no_longer_applies(sc: Scenario) -> None:
    contract, (_a, b) = sc.active_contract(1000, 2000)
    proposal = _propose(
        sc,
        contract,
        [
            {"action": "add", "title": "Extra", "amount": 4000},
            {"action": "edit", "milestone_id": b, "amount": 2500},
        ],
    )
    sc.fire("milestone", b, "fund", CLIENT)  # funding is not a milestone change (FP3)
    before = sc.snapshot()
    with pytest.raises(TransitionRejected):
        sc.fire("proposal", proposal, "accept", CLIENT)
    assert sc.snapshot() == before


def test_fp3_pending_proposal_blocks_client_milestone_changes(sc: Scenario) -> None:
    contract, (a, b) = sc.active_contract(1000, 2000)
    proposal = _propose(sc, contract, [{"action": "delete", "milestone_id": b}])
    before = sc.snapshot()
    attempts = [
        ("milestone", b, "edit", {"title": "x"}),
        ("milestone", b, "delete", {}),
        ("contract", contract, "add_milestones", {"milestones": [{"title": "x", "amount": 900}]}),
        ("contract", contract, "reorder_milestones", {"order": [b, a]}),
    ]
    for entity, entity_id, event, payload in attempts:
        with pytest.raises(TransitionRejected) as refused:
            sc.fire(entity, entity_id, event, CLIENT, payload)
        assert refused.value.code == "proposal_pending", event
    assert sc.snapshot() == before
    sc.fire("proposal", proposal, "decline", CLIENT)
    sc.fire("milestone", b, "edit", CLIENT, {"title": "x"})


# -- refunds -----------------------------------------------------------------------


def _ended_with_escrow(sc: Scenario, amount: int = 10_000) -> tuple[int, int]:
    contract, (m,) = sc.active_contract(amount)
    sc.fire("milestone", m, "fund", CLIENT)
    sc.fire("contract", contract, "end", CLIENT)
    return contract, m


def _request_refund(sc: Scenario, contract: int) -> int:
    result = sc.fire("contract", contract, "request_refund", CLIENT, {"reason": "not delivered"})
    return int(result["created"][0]["id"])


def test_rf1_refund_after_end_or_of_remainder_only(sc: Scenario) -> None:
    contract, (m,) = sc.active_contract(10_000)
    sc.fire("milestone", m, "fund", CLIENT)
    with pytest.raises(TransitionRejected) as refused:
        _request_refund(sc, contract)
    assert refused.value.code == "nothing_to_refund"
    sc.fire("contract", contract, "end", CLIENT)
    refund = _request_refund(sc, contract)
    assert sc.row("refund", refund)["amount"] == 10_000
    assert sc.state("milestone", m) == "refund_requested"
    assert sc.row("refund", refund)["reason"] == "not delivered"


def test_rf2_freelancer_approves_refund(sc: Scenario) -> None:
    contract, m = _ended_with_escrow(sc)
    refund = _request_refund(sc, contract)
    sc.fire("refund", refund, "approve", FREELANCER)
    assert sc.ledger(contract) == [("deposit", 10_000), ("refund", 10_000)]
    assert sc.state("milestone", m) == "refunded"
    assert sc.state("contract", contract) == "closed"
    sc.check_invariants()


def test_rf2_unanswered_refund_returns_to_client(sc: Scenario) -> None:
    contract, _m = _ended_with_escrow(sc)
    refund = _request_refund(sc, contract)
    sc.wait(days=6)
    assert sc.state("refund", refund) == "requested"
    sc.wait(days=1)
    assert sc.state("refund", refund) == "refunded"
    assert sc.ledger(contract)[-1] == ("refund", 10_000)
    assert sc.history("refund", refund)[-1]["event"] == "refund_by_default"
    sc.check_invariants()


def test_rf2_dispute_stops_the_clock(sc: Scenario) -> None:
    contract, _m = _ended_with_escrow(sc)
    refund = _request_refund(sc, contract)
    sc.fire("refund", refund, "dispute", FREELANCER)
    sc.wait(days=30)
    assert sc.state("refund", refund) == "disputed"
    assert sc.ledger(contract) == [("deposit", 10_000)]


@pytest.mark.parametrize(
    ("to_client", "to_freelancer", "milestone_state"),
    [(10_000, 0, "refunded"), (0, 10_000, "released"), (3_000, 7_000, "settled")],
)
def test_rf3_dispute_team_settles(
    sc: Scenario, to_client: int, to_freelancer: int, milestone_state: str
) -> None:
    contract, m = _ended_with_escrow(sc)
    refund = _request_refund(sc, contract)
    sc.fire("refund", refund, "dispute", FREELANCER)
    for actor in (CLIENT, FREELANCER):
        with pytest.raises(PermissionDenied):
            sc.fire(
                "refund",
                refund,
                "resolve",
                actor,
                {"to_client": to_client, "to_freelancer": to_freelancer},
            )
    assert (
        sc.refused(
            ValidationError,
            "refund",
            refund,
            "resolve",
            ADMIN,
            {"to_client": 1, "to_freelancer": 1},
        )
        == "split_does_not_add_up"
    )
    sc.fire(
        "refund", refund, "resolve", ADMIN, {"to_client": to_client, "to_freelancer": to_freelancer}
    )
    expected = [("deposit", 10_000)]
    expected += [("refund", to_client)] if to_client else []
    expected += [("release", to_freelancer)] if to_freelancer else []
    assert sc.ledger(contract) == expected
    assert sc.state("milestone", m) == milestone_state
    sc.check_invariants()


# -- escrow ledger -----------------------------------------------------------------


def test_es1_every_movement_is_a_ledger_entry_and_held_never_negative(sc: Scenario) -> None:
    contract, (a, b) = sc.active_contract(10_000, 5_000)
    sc.fire("milestone", a, "fund", CLIENT)
    sc.fire("milestone", a, "release", CLIENT, {"amount": 12_000})
    sc.fire("milestone", b, "fund", CLIENT)
    sc.fire("milestone", b, "release", CLIENT, {"amount": 1_000})
    row = sc.row("contract", contract)
    assert [k for k, _ in sc.ledger(contract)] == [
        "deposit",
        "deposit",
        "release",
        "deposit",
        "release",
    ]
    assert row["held"] == 4_000
    sc.check_invariants()


def test_es1_database_refuses_negative_escrow(sc: Scenario) -> None:
    from storage.errors import ConflictError

    contract, _ = sc.active_contract(10_000)
    table = CONTRACTS
    with pytest.raises(ConflictError), transaction(sc.db) as conn:
        conn.execute(table.update().where(table.c.id == contract).values(held=-1, deposited=-1))


def test_es2_released_plus_refunded_plus_held_equals_deposited(sc: Scenario) -> None:
    from storage.errors import ConflictError

    contract, (a,) = sc.active_contract(10_000)
    sc.fire("milestone", a, "fund", CLIENT)
    sc.fire("milestone", a, "release", CLIENT, {"amount": 4_000})
    row = sc.row("contract", contract)
    assert row["released"] + row["refunded"] + row["held"] == row["deposited"] == 10_000
    table = CONTRACTS
    with pytest.raises(ConflictError), transaction(sc.db) as conn:  # the database holds it too
        conn.execute(table.update().where(table.c.id == contract).values(released=5_000))
    sc.check_invariants()


def test_es3_repeated_release_and_timer_move_money_once(sc: Scenario) -> None:
    contract, m = sc.in_review(10_000)
    sc.fire("milestone", m, "release", CLIENT, idempotency_key="release-1")
    sc.fire("milestone", m, "release", CLIENT, idempotency_key="release-1")
    with pytest.raises(TransitionRejected):
        sc.fire("milestone", m, "release", CLIENT)
    assert sc.wait(days=20).fired == 0
    assert sc.ledger(contract) == [("deposit", 10_000), ("release", 10_000)]


# -- parties and permissions --------------------------------------------------------


def test_pa1_each_event_only_by_its_roles(sc: Scenario) -> None:
    _contract, m = sc.in_review()
    before = sc.snapshot()
    for actor in (FREELANCER, ADMIN):
        assert sc.refused(PermissionDenied, "milestone", m, "release", actor) == "role_not_allowed"
    # PA1 (as changed): no request names the system role, whatever the event.
    assert sc.refused(PermissionDenied, "milestone", m, "release", SYSTEM) == "system_role_reserved"
    with pytest.raises(PermissionDenied):
        sc.fire("milestone", m, "auto_approve", CLIENT)
    assert sc.snapshot() == before


def test_pa2_party_acts_only_on_its_own_contracts(sc: Scenario) -> None:
    _contract, m = sc.in_review()
    before = sc.snapshot()
    for actor in (STRANGER, Actor(Role.FREELANCER, "eve")):
        assert (
            sc.refused(
                PermissionDenied,
                "milestone",
                m,
                "release" if actor.role is Role.CLIENT else "submit",
                actor,
            )
            == "not_a_party"
        )
    assert sc.snapshot() == before


def test_pa3_every_change_records_who_when_and_why(sc: Scenario) -> None:
    _contract, m = sc.in_review()
    sc.fire("milestone", m, "request_changes", CLIENT, {"reason": "colours are off"})
    sc.fire("milestone", m, "submit", FREELANCER)
    sc.wait(days=14)
    rows = sc.history("milestone", m)
    assert [(r["event"], r["actor_role"], r["actor_party"], r["cause"]) for r in rows] == [
        ("create", "client", "acme", "request"),
        ("fund", "client", "acme", "request"),
        ("submit", "freelancer", "ada", "request"),
        ("request_changes", "client", "acme", "request"),
        ("submit", "freelancer", "ada", "request"),
        ("auto_approve", "system", "escrowflow", "timer"),
    ]
    assert rows[3]["payload"] == {"reason": "colours are off"}
    assert all(r["at"] is not None for r in rows)
    assert rows[-1]["at"] >= rows[-1]["due_at"]


# -- notifications -----------------------------------------------------------------


def test_nt1_every_transition_produces_an_event_for_the_counterparty(sc: Scenario) -> None:
    contract, _m = sc.in_review()
    _cr_contract, (_m2,) = sc.active_contract(10_000)
    sc.wait(days=14)
    events = sc.rows("outbox_events", contract_id=contract)
    history = sc.rows("history", contract_id=contract)
    assert len(events) == len(history)
    assert {e["history_id"] for e in events} == {h["id"] for h in history}
    by_type = {e["type"]: e for e in events}
    assert by_type["milestone.submit"]["recipients"] == ["acme"]
    assert by_type["milestone.fund"]["recipients"] == ["ada"]
    assert sorted(by_type["milestone.auto_approve"]["recipients"]) == ["acme", "ada"]
    assert by_type["milestone.auto_approve"]["data"]["cause"] == "timer"
    assert len({e["event_id"] for e in events}) == len(events)


# -- bad input: its own code each, and nothing changes -----------------------------


@pytest.mark.parametrize(
    ("entity", "event", "payload", "error", "code"),
    [
        ("nonsense", "fund", {}, NotFound, "unknown_entity"),
        ("milestone", "teleport", {}, NotFound, "unknown_event"),
        ("milestone", "fund", {"amount": 1}, ValidationError, "unknown_field"),
        ("milestone", "release", {"amount": 12.5}, ValidationError, "amount_not_integer"),
        ("milestone", "release", {"amount": -1}, ValidationError, "amount_not_positive"),
    ],
)
def test_bad_input_is_refused_with_its_code_and_changes_nothing(
    sc: Scenario,
    entity: str,
    event: str,
    payload: dict[str, object],
    error: type[Exception],
    code: str,
) -> None:
    _contract, (m,) = sc.active_contract(10_000)
    sc.fire("milestone", m, "fund", CLIENT)
    before = sc.snapshot()
    with pytest.raises(error) as refused:
        sc.fire(entity, m, event, CLIENT, payload)
    assert getattr(refused.value, "code", None) == code
    assert sc.snapshot() == before


def test_bad_offer_input_is_refused_and_changes_nothing(sc: Scenario) -> None:
    before = sc.snapshot()
    cases = [
        ({"currency": "XYZ"}, "unknown_currency"),
        ({"currency": 840}, "unknown_currency"),
        ({"freelancer_id": "acme"}, "same_party"),
        ({"kind": "retainer"}, "invalid_kind"),
        ({"milestones": [{"title": "x", "amount": 99.99}]}, "amount_not_integer"),
        ({"surprise": 1}, "unknown_field"),
    ]
    for override, code in cases:
        payload = {"freelancer_id": "ada", "title": "T", "currency": "USD", **override}
        with pytest.raises(ValidationError) as refused:
            sc.engine.create_contract(CLIENT, payload)
        assert refused.value.code == code, override
    with pytest.raises(NotFound) as missing:
        sc.fire("milestone", 999, "fund", CLIENT)
    assert missing.value.code == "milestone_not_found"
    assert sc.snapshot() == before
