"""What contract events do (CT, MS2, MS3, FP1, RF1): offers, milestones, proposals,
refund requests, ending."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from storage import entities
from storage.errors import TransitionRejected, ValidationError
from workflows import payloads as p
from workflows.describe import describe_item, jsonable
from workflows.effects.common import (
    FIELDS,
    at_index,
    cancel_change_request,
    cancel_proposal,
    check_limit,
    create_milestones,
    require_change,
    require_not_started,
)
from workflows.registry import effect
from workflows.step import Step
from workflows.unit_of_work import UnitOfWork


def offer_contract(unit: UnitOfWork, payload: Mapping[str, Any]) -> Step:
    """CT2: the client's offer; milestones given with it are created in the same call."""
    p.only(payload, ("freelancer_id", "title", "currency", "kind", "milestones"), "an offer")
    freelancer = p.text(payload, "freelancer_id", max_length=100, required=True)
    if freelancer == unit.actor.party:
        raise ValidationError(
            "a client cannot offer a contract to itself: give another freelancer_id",
            code="same_party",
        )
    kind = payload.get("kind", "fixed")
    if kind not in ("fixed", "hourly"):
        raise ValidationError(
            f"kind must be fixed or hourly, not {kind!r}",
            code="invalid_kind",
            details={"field": "kind"},
        )
    values = {
        "kind": kind,
        "client_id": unit.actor.party,
        "freelancer_id": freelancer,
        "title": p.text(payload, "title", max_length=200, required=True),
        "currency": unit.policy.check_currency(payload.get("currency")),
        "terms_id": unit.terms.current().id,  # TM1: these terms govern it for life
        "deposited": 0,
        "released": 0,
        "refunded": 0,
        "held": 0,
        "credit": 0,
        "milestone_count": 0,
        "active_milestone_id": None,
        "open_proposal_id": None,
        "open_refund_id": None,
    }
    step = unit.create("contract", values, parent=None)
    if payload.get("milestones") is not None:
        unit.transition(step.record, "add_milestones", {"milestones": payload["milestones"]}, step)
    return step


@effect("contract", "add_milestones", takes=("milestones",))
def add_milestones(step: Step) -> None:
    """MS2: several milestones in one call, all or none."""
    items = p.listing(step.payload, "milestones", max_items=step.policy.max_milestones + 1)
    new = []
    for index, item in enumerate(items):
        with at_index("milestones", index):
            item = p.mapping(item, f"milestones[{index}]")
            p.only(item, FIELDS, "a milestone")
            new.append(p.milestone_fields(item, step.contract["currency"], step.policy, new=True))
    create_milestones(step, new)


@effect("contract", "reorder_milestones", takes=("order",))
def reorder_milestones(step: Step) -> None:
    """MS3: reorder the milestones that have not started; the others keep their place."""
    order = [
        p.identifier({"order": value}, "order")
        for value in p.listing(step.payload, "order", max_items=step.policy.max_milestones)
    ]
    pending = entities.not_started(step.unit.tx, step.contract.id)
    if sorted(order) != sorted(row.id for row in pending):
        raise ValidationError(
            "order must list every milestone that has not started, each once: "
            f"{[row.id for row in pending]}",
            code="invalid_order",
            details={"field": "order", "pending": [row.id for row in pending]},
        )
    current = {row.id: row.position for row in pending}
    for milestone_id, position in zip(order, [row.position for row in pending], strict=True):
        if current[milestone_id] != position:
            step.unit.load("milestone", milestone_id).set(position=position)


@effect("contract", "propose", takes=("items",))
def propose(step: Step) -> None:
    """FP1: the freelancer proposes to add, edit or delete milestones not yet started.

    FP2, X12: a proposal that could not apply is refused now, not on accept: each milestone at
    most once, every edit changes something, and the result stays within CT3.
    """
    items = p.listing(step.payload, "items", max_items=step.policy.max_milestones)
    rows: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        with at_index("items", index):
            row = _proposal_item(step, p.mapping(item, f"items[{index}]"))
            named = row.get("milestone_id")
            if named is not None and any(r.get("milestone_id") == named for r in rows):
                raise ValidationError(
                    f"milestone {named} appears twice: a proposal changes each milestone "
                    "once; merge the changes into one item",
                    code="duplicate_milestone",
                    details={"milestone_id": named},
                )
            rows.append(row)
    adds = sum(row["action"] == "add" for row in rows)
    deletes = sum(row["action"] == "delete" for row in rows)
    check_limit(step, adds - deletes)
    rows = [
        {
            "ordinal": ordinal,
            "milestone_id": None,
            "title": None,
            "description": None,
            "due_date": None,
            "amount": None,
            "before": None,
            **row,
        }
        for ordinal, row in enumerate(rows)
    ]
    proposal = step.unit.create(
        "proposal",
        {"contract_id": step.contract.id},
        parent=step,
        details={"items": [describe_item(row) for row in rows]},
    )
    entities.add_proposal_items(
        step.unit.tx, [{"proposal_id": proposal.record.id, **row} for row in rows]
    )
    step.contract.set(open_proposal_id=proposal.record.id)
    step.details["proposal_id"] = proposal.record.id


def _proposal_item(step: Step, item: Mapping[str, Any]) -> dict[str, Any]:
    action = item.get("action")
    currency = step.contract["currency"]
    if action == "add":
        p.only(item, ("action", *FIELDS), "an add item")
        return {"action": "add", **p.milestone_fields(item, currency, step.policy, new=True)}
    if action in ("edit", "delete"):
        milestone = step.unit.load("milestone", p.identifier(item, "milestone_id"))
        require_not_started(milestone)
        if action == "delete":
            p.only(item, ("action", "milestone_id"), "a delete item")
            before = {f: jsonable(milestone[f]) for f in FIELDS}
            return {"action": "delete", "milestone_id": milestone.id, "before": before}
        p.only(item, ("action", "milestone_id", *FIELDS), "an edit item")
        fields = require_change(
            milestone, p.milestone_fields(item, currency, step.policy, new=False)
        )
        before = {f: jsonable(milestone[f]) for f in fields}
        return {"action": "edit", "milestone_id": milestone.id, **fields, "before": before}
    raise ValidationError(
        f"action must be add, edit or delete, not {action!r}",
        code="invalid_action",
        details={"field": "action"},
    )


@effect("contract", "request_refund")
def request_refund(step: Step) -> None:
    """RF1: a refund of the remainder of a partial release, or of what an ended contract
    still holds for its active milestone. The money is set aside until settled."""
    contract, unit = step.contract, step.unit
    milestone_id = None
    if contract["credit"] > 0:
        amount = contract["credit"]
        contract.add(credit=-amount)
    elif contract["state"] == "ended" and contract["active_milestone_id"] is not None:
        milestone = unit.load("milestone", contract["active_milestone_id"])
        if milestone["state"] != "active":
            raise TransitionRejected(
                f"milestone {milestone.id} is {milestone['state']}: release it or request "
                "changes before asking for its escrow back",
                code="milestone_in_review",
            )
        milestone_id, amount = milestone.id, milestone["escrow"]
    else:
        raise TransitionRejected(
            f"contract {contract.id} holds no escrow that can be refunded now: a refund "
            "is possible after a partial release, or once the contract has ended",
            code="nothing_to_refund",
        )
    refund = unit.create(
        "refund",
        {
            "contract_id": contract.id,
            "milestone_id": milestone_id,
            "amount": amount,
            "reason": p.reason(step.payload) or "",
        },
        parent=step,
    )
    contract.set(open_refund_id=refund.record.id)
    if milestone_id is not None:
        unit.cascade("milestone", milestone_id, "hold_for_refund", step)


@effect("contract", "decline")
@effect("contract", "withdraw")
def return_escrow_of_offer(step: Step) -> None:
    """CT2: whatever was deposited for a withdrawn or declined offer goes back in full."""
    contract = step.contract
    if contract["active_milestone_id"] is not None:
        step.unit.cascade("milestone", contract["active_milestone_id"], "refund", step)
    step.unit.pay_out(step, "refund", contract["credit"], None, None)
    contract.set(credit=0)
    cancel_proposal(step)


@effect("contract", "end")
def end_contract(step: Step) -> None:
    """CT4: escrow stays held; open proposals and change requests lapse."""
    cancel_proposal(step)
    if step.contract["active_milestone_id"] is not None:
        milestone = step.unit.load("milestone", step.contract["active_milestone_id"])
        cancel_change_request(step, milestone)
