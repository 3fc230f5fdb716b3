"""What milestone events do (MS, CR1, CR3): funding, releases, changes, refunds."""

from __future__ import annotations

from storage import entities
from storage.errors import TransitionRejected, ValidationError
from workflows import payloads as p
from workflows.describe import changes
from workflows.effects.common import FIELDS, cancel_change_request, require_change
from workflows.policy import approved_amount, format_money
from workflows.registry import effect
from workflows.step import Step


@effect("milestone", "fund")
def fund(step: Step) -> None:
    """MS5: deposit the amount into escrow, counting what remains of an earlier release."""
    milestone, contract = step.record, step.contract
    from_credit = min(contract["credit"], milestone["amount"])
    contract.add(credit=-from_credit)
    step.unit.deposit(step, milestone["amount"] - from_credit, milestone.id)
    milestone.set(escrow=milestone["amount"])
    contract.set(active_milestone_id=milestone.id)
    _cancel_proposal_naming(step, milestone.id)


def _cancel_proposal_naming(step: Step, milestone_id: int) -> None:
    """FP2: a waiting proposal that changes a milestone which has now started can no
    longer apply: it is cancelled, with the reason, instead of blocking the client."""
    proposal_id = step.contract["open_proposal_id"]
    if proposal_id is None:
        return
    if entities.proposal_names(step.unit.tx, proposal_id, milestone_id):
        reason = (
            f"milestone {milestone_id} was funded: the proposal changes a milestone that "
            "has started, so it can no longer apply"
        )
        step.unit.cascade("proposal", proposal_id, "cancel", step, reason=reason)


@effect("milestone", "edit", takes=FIELDS)
def edit_milestone(step: Step) -> None:
    fields = p.milestone_fields(step.payload, step.contract["currency"], step.policy, new=False)
    step.details["changes"] = changes(step.record, fields)  # NT1
    step.record.set(**fields)


@effect("milestone", "delete")
def delete_milestone(step: Step) -> None:
    """CT3: a deleted future milestone no longer counts toward the limit."""
    step.contract.add(milestone_count=-1)


@effect("milestone", "submit")
def submit(step: Step) -> None:
    cancel_change_request(step, step.record)  # CR5


@effect("milestone", "release", takes=("amount", "bonus"))
def release(step: Step) -> None:
    """MS8: release all, part (MS9) or more than the milestone (the rest is deposited);
    MS14: far more only as a stated bonus."""
    bonus = step.payload.get("bonus", False)
    if not isinstance(bonus, bool):
        raise ValidationError(
            f"bonus must be true or false, not {bonus!r}",
            code="invalid_bonus",
            details={"field": "bonus"},
        )
    if "amount" in step.payload:
        amount = p.integer_amount(step.payload["amount"], "amount")
        if not bonus:
            check_release_limit(step, amount)
        _release(step, amount)
    else:
        _release(step, approved_amount(step.record))


def check_release_limit(step: Step, amount: int) -> None:
    """MS14: a release above the policy's multiple of the agreed amount is refused unless
    the client states it is a bonus: a typo must not pay a fortune."""
    milestone, currency = step.record, step.contract["currency"]
    # The platform's guard, not a term of the contract (TM1): the deployment's setting.
    multiple = step.unit.deployment_policy.release_limit_multiple
    limit = milestone["amount"] * multiple
    if amount > limit:
        raise TransitionRejected(
            f"a release of {format_money(amount, currency)} is more than {multiple}x the "
            f"{format_money(milestone['amount'], currency)} agreed for milestone "
            f"{milestone.id}: release at most {format_money(limit, currency)}, or state "
            'that it is a bonus ("bonus": true) (MS14)',
            code="release_above_limit",
            details={"limit": limit, "amount": amount, "multiple": multiple},
        )


@effect("milestone", "auto_approve")
def auto_approve(step: Step) -> None:
    """MS10: released exactly as the client's approval without an amount."""
    _release(step, approved_amount(step.record))


def _release(step: Step, amount: int) -> None:
    milestone, contract = step.record, step.contract
    escrow = milestone["escrow"]
    if amount > escrow:
        step.unit.deposit(step, amount - escrow, milestone.id)
        escrow = amount
    step.unit.pay_out(step, "release", amount, milestone.id, None)
    contract.add(credit=escrow - amount)  # MS9: the remainder stays for the client
    milestone.set(escrow=0, released_amount=milestone["released_amount"] + amount)
    contract.set(active_milestone_id=None)
    cancel_change_request(step, milestone)  # CR5


@effect("milestone", "deposit")
def deposit_shortfall(step: Step) -> None:
    """CR3: after an accepted higher amount, the client tops escrow up to the amount."""
    milestone = step.record
    step.unit.deposit(step, milestone["amount"] - milestone["escrow"], milestone.id)
    milestone.set(escrow=milestone["amount"])


@effect("milestone", "open_change_request", takes=FIELDS)
def open_change_request(step: Step) -> None:
    """CR1: the client asks to change the active milestone (to something else)."""
    fields = p.milestone_fields(step.payload, step.contract["currency"], step.policy, new=False)
    require_change(step.record, fields)
    described = {"milestone_id": step.record.id, "changes": changes(step.record, fields)}  # NT1
    step.details.update(described)
    request = step.unit.create(
        "change_request",
        {
            "title": None,
            "description": None,
            "due_date": None,
            "amount": None,
            **fields,
            "contract_id": step.contract.id,
            "milestone_id": step.record.id,
        },
        parent=step,
        details=described,
    )
    step.record.set(open_change_request_id=request.record.id)


@effect("milestone", "apply_change", takes=FIELDS)
def apply_change(step: Step) -> None:
    """CR3: the milestone takes the accepted values at once."""
    step.details["changes"] = changes(step.record, step.payload)  # NT1
    step.record.set(**step.payload)


@effect("milestone", "hold_for_refund")
def hold_for_refund(step: Step) -> None:
    step.record.set(escrow=0)  # now held by the refund request
    cancel_change_request(step, step.record)


@effect("milestone", "release_hold", takes=("amount",))
def release_hold(step: Step) -> None:
    step.record.set(escrow=step.payload["amount"])


@effect("milestone", "refund")
def refund_milestone(step: Step) -> None:
    step.unit.pay_out(step, "refund", step.record["escrow"], step.record.id, None)
    step.record.set(escrow=0)
    step.contract.set(active_milestone_id=None)
    cancel_change_request(step, step.record)


@effect("milestone", "award", takes=("amount",))
@effect("milestone", "split", takes=("amount",))
def settle_milestone(step: Step) -> None:
    step.record.set(released_amount=step.record["released_amount"] + step.payload["amount"])
    step.contract.set(active_milestone_id=None)
