"""What milestone events do (MS, CR1, CR3): funding, releases, changes, refunds."""

from __future__ import annotations

from storage import entities
from workflows import payloads as p
from workflows.describe import changes
from workflows.effects.common import FIELDS, cancel_change_request, require_change
from workflows.policy import approved_amount
from workflows.registry import effect
from workflows.step import Step


@effect("milestone", "fund")
def fund(s: Step) -> None:
    """MS5: deposit the amount into escrow, counting what remains of an earlier release."""
    milestone, contract = s.record, s.contract
    from_credit = min(contract["credit"], milestone["amount"])
    contract.add(credit=-from_credit)
    s.unit.deposit(s, milestone["amount"] - from_credit, milestone.id)
    milestone.set(escrow=milestone["amount"])
    contract.set(active_milestone_id=milestone.id)
    _cancel_proposal_naming(s, milestone.id)


def _cancel_proposal_naming(s: Step, milestone_id: int) -> None:
    """FP2: a waiting proposal that changes a milestone which has now started can no
    longer apply: it is cancelled, with the reason, instead of blocking the client."""
    proposal_id = s.contract["open_proposal_id"]
    if proposal_id is None:
        return
    if entities.proposal_names(s.unit.writes, proposal_id, milestone_id):
        reason = (
            f"milestone {milestone_id} was funded: the proposal changes a milestone that "
            "has started, so it can no longer apply"
        )
        s.unit.cascade("proposal", proposal_id, "cancel", s, reason=reason)


@effect("milestone", "edit", takes=FIELDS)
def edit_milestone(s: Step) -> None:
    fields = p.milestone_fields(s.payload, s.contract["currency"], s.policy, new=False)
    s.details["changes"] = changes(s.record, fields)  # NT1
    s.record.set(**fields)


@effect("milestone", "delete")
def delete_milestone(s: Step) -> None:
    """CT3: a deleted future milestone no longer counts toward the limit."""
    s.contract.add(milestone_count=-1)


@effect("milestone", "submit")
def submit(s: Step) -> None:
    cancel_change_request(s, s.record)  # CR5


@effect("milestone", "release", takes=("amount",))
def release(s: Step) -> None:
    """MS8: release all, part (MS9) or more than the milestone (the rest is deposited)."""
    if "amount" in s.payload:
        _release(s, p.integer_amount(s.payload["amount"], "amount"))
    else:
        _release(s, approved_amount(s.record))


@effect("milestone", "auto_approve")
def auto_approve(s: Step) -> None:
    """MS10: released exactly as the client's approval without an amount."""
    _release(s, approved_amount(s.record))


def _release(s: Step, amount: int) -> None:
    milestone, contract = s.record, s.contract
    escrow = milestone["escrow"]
    if amount > escrow:
        s.unit.deposit(s, amount - escrow, milestone.id)
        escrow = amount
    s.unit.pay_out(s, "release", amount, milestone.id, None)
    contract.add(credit=escrow - amount)  # MS9: the remainder stays for the client
    milestone.set(escrow=0, released_amount=milestone["released_amount"] + amount)
    contract.set(active_milestone_id=None)
    cancel_change_request(s, milestone)  # CR5


@effect("milestone", "deposit")
def deposit_shortfall(s: Step) -> None:
    """CR3: after an accepted higher amount, the client tops escrow up to the amount."""
    milestone = s.record
    s.unit.deposit(s, milestone["amount"] - milestone["escrow"], milestone.id)
    milestone.set(escrow=milestone["amount"])


@effect("milestone", "open_change_request", takes=FIELDS)
def open_change_request(s: Step) -> None:
    """CR1: the client asks to change the active milestone (to something else)."""
    fields = p.milestone_fields(s.payload, s.contract["currency"], s.policy, new=False)
    require_change(s.record, fields)
    described = {"milestone_id": s.record.id, "changes": changes(s.record, fields)}  # NT1
    s.details.update(described)
    request = s.unit.create(
        "change_request",
        {
            "title": None,
            "description": None,
            "due_date": None,
            "amount": None,
            **fields,
            "contract_id": s.contract.id,
            "milestone_id": s.record.id,
        },
        parent=s,
        details=described,
    )
    s.record.set(open_change_request_id=request.record.id)


@effect("milestone", "apply_change", takes=FIELDS)
def apply_change(s: Step) -> None:
    """CR3: the milestone takes the accepted values at once."""
    s.details["changes"] = changes(s.record, s.payload)  # NT1
    s.record.set(**s.payload)


@effect("milestone", "hold_for_refund")
def hold_for_refund(s: Step) -> None:
    s.record.set(escrow=0)  # now held by the refund request
    cancel_change_request(s, s.record)


@effect("milestone", "release_hold", takes=("amount",))
def release_hold(s: Step) -> None:
    s.record.set(escrow=s.payload["amount"])


@effect("milestone", "refund")
def refund_milestone(s: Step) -> None:
    s.unit.pay_out(s, "refund", s.record["escrow"], s.record.id, None)
    s.record.set(escrow=0)
    s.contract.set(active_milestone_id=None)
    cancel_change_request(s, s.record)


@effect("milestone", "award", takes=("amount",))
@effect("milestone", "split", takes=("amount",))
def settle_milestone(s: Step) -> None:
    s.record.set(released_amount=s.record["released_amount"] + s.payload["amount"])
    s.contract.set(active_milestone_id=None)
