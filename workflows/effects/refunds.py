"""What refund events do (RF2, RF3, X5): the money set aside is settled."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from storage.errors import ValidationError
from workflows import payloads as p
from workflows.policy import format_money
from workflows.registry import effect
from workflows.step import Step


@effect("refund", "approve")
@effect("refund", "refund_by_default")
def refund_to_client(step: Step) -> None:
    """RF2: approved, or not answered in time: the money returns to the client."""
    _settle(step, to_client=step.record["amount"], to_freelancer=0)


@effect("refund", "resolve", takes=("to_client", "to_freelancer"))
def resolve_dispute(step: Step) -> None:
    """RF3: the dispute team decides: all to one party, or a split."""
    checked_split(step.record["amount"], step.contract["currency"], step.payload)
    split = {f: p.non_negative_amount(step.payload.get(f, 0), f) for f in SPLIT}
    _settle(step, **split)


SPLIT = ("to_client", "to_freelancer")


def checked_split(amount: int, currency: str, payload: Mapping[str, Any]) -> int:
    """RF3: a resolution's split, refused unless it adds up to the disputed `amount`;
    the money it moves (all of it, PA4)."""
    split = {f: p.non_negative_amount(payload.get(f, 0), f) for f in SPLIT}
    if split["to_client"] + split["to_freelancer"] != amount:
        raise ValidationError(
            f"to_client + to_freelancer must add up to the disputed "
            f"{format_money(amount, currency)}",
            code="split_does_not_add_up",
            details={"amount": amount},
        )
    return amount


def _settle(step: Step, to_client: int, to_freelancer: int) -> None:
    refund = step.record
    milestone_id = refund["milestone_id"]
    step.unit.pay_out(step, "refund", to_client, milestone_id, refund.id)
    step.unit.pay_out(step, "release", to_freelancer, milestone_id, refund.id)
    refund.set(to_client=to_client, to_freelancer=to_freelancer)
    step.contract.set(open_refund_id=None)
    if milestone_id is not None:
        if to_freelancer == 0:
            step.unit.cascade("milestone", milestone_id, "refund", step)
        else:
            event = "award" if to_client == 0 else "split"
            step.unit.cascade("milestone", milestone_id, event, step, amount=to_freelancer)


@effect("refund", "cancel")
def cancel_refund(step: Step) -> None:
    """X5: the client withdraws the request; the money goes back where it was held."""
    refund = step.record
    step.contract.set(open_refund_id=None)
    if refund["milestone_id"] is not None:
        step.unit.cascade(
            "milestone", refund["milestone_id"], "release_hold", step, amount=refund["amount"]
        )
    else:
        step.contract.add(credit=refund["amount"])
