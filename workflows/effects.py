"""What each event does besides changing state: money, child entities, cascades.

Effects run inside the event's transaction, after its machine accepted the event; an
error here rolls the whole event back. Money moves only through `Unit.deposit` and
`Unit.pay_out`, which write the ledger and the contract's totals together (ES1, ES2).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from storage import models
from storage.errors import TransitionRejected, ValidationError
from workflows import payloads as p
from workflows.describe import changes, describe_item, jsonable
from workflows.engine import Step, Unit, effect
from workflows.policy import format_money

_milestones = models.MILESTONES
_items = models.PROPOSAL_ITEMS
FIELDS = p.MILESTONE_FIELDS


# -- contracts (CT) -------------------------------------------------------------------


def offer_contract(unit: Unit, payload: Mapping[str, Any]) -> Step:
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
        "currency": unit.engine.policy.check_currency(payload.get("currency")),
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
def add_milestones(s: Step) -> None:
    """MS2: several milestones in one call, all or none."""
    items = p.listing(s.payload, "milestones", max_items=s.policy.max_milestones + 1)
    new = []
    for index, item in enumerate(items):
        with _at_index("milestones", index):
            item = p.mapping(item, f"milestones[{index}]")
            p.only(item, FIELDS, "a milestone")
            new.append(p.milestone_fields(item, s.contract["currency"], s.policy, new=True))
    _create_milestones(s, new)


def _check_limit(s: Step, more: int) -> None:
    """CT3: at most the limit of milestones; deleted ones do not count."""
    contract, limit = s.contract, s.policy.max_milestones
    if contract["milestone_count"] + more > limit:
        raise TransitionRejected(
            f"contract {contract.id} has {contract['milestone_count']} milestones and the limit "
            f"is {limit}: adding {more} more is refused; start a new contract for more work",
            code="milestone_limit_reached",
            details={"limit": limit, "count": contract["milestone_count"]},
        )


def _create_milestones(s: Step, new: list[dict[str, Any]]) -> None:
    contract, unit = s.contract, s.unit
    _check_limit(s, len(new))
    last = unit.conn.execute(
        sa.select(sa.func.max(_milestones.c.position)).where(
            _milestones.c.contract_id == contract.id
        )
    ).scalar()
    for offset, fields in enumerate(new, start=1):
        unit.create(
            "milestone",
            {
                "due_date": None,
                **fields,
                "contract_id": contract.id,
                "position": (last or 0) + offset,
                "escrow": 0,
                "released_amount": 0,
                "open_change_request_id": None,
            },
            parent=s,
        )
    contract.add(milestone_count=len(new))


@effect("contract", "reorder_milestones", takes=("order",))
def reorder_milestones(s: Step) -> None:
    """MS3: reorder the milestones that have not started; the others keep their place."""
    order = [
        p.identifier({"order": value}, "order")
        for value in p.listing(s.payload, "order", max_items=s.policy.max_milestones)
    ]
    pending = s.unit.conn.execute(
        sa.select(_milestones.c.id, _milestones.c.position)
        .where(_milestones.c.contract_id == s.contract.id, _milestones.c.state == "pending")
        .order_by(_milestones.c.position)
    ).all()
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
            s.unit.conn.execute(
                _milestones.update()
                .where(_milestones.c.id == milestone_id)
                .values(position=position)
            )


@effect("contract", "propose", takes=("items",))
def propose(s: Step) -> None:
    """FP1: the freelancer proposes to add, edit or delete milestones not yet started.

    FP2: a proposal that could not apply is refused now, not on accept: each milestone at
    most once, every edit changes something, and the result stays within CT3.
    """
    items = p.listing(s.payload, "items", max_items=s.policy.max_milestones)
    rows: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        with _at_index("items", index):
            row = _proposal_item(s, p.mapping(item, f"items[{index}]"))
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
    _check_limit(s, adds - deletes)
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
    proposal = s.unit.create(
        "proposal",
        {"contract_id": s.contract.id},
        parent=s,
        details={"items": [describe_item(row) for row in rows]},
    )
    s.unit.conn.execute(
        _items.insert(), [{"proposal_id": proposal.record.id, **row} for row in rows]
    )
    s.contract.set(open_proposal_id=proposal.record.id)
    s.details["proposal_id"] = proposal.record.id


def _proposal_item(s: Step, item: Mapping[str, Any]) -> dict[str, Any]:
    action = item.get("action")
    currency = s.contract["currency"]
    if action == "add":
        p.only(item, ("action", *FIELDS), "an add item")
        return {"action": "add", **p.milestone_fields(item, currency, s.policy, new=True)}
    if action in ("edit", "delete"):
        milestone = s.unit.load("milestone", p.identifier(item, "milestone_id"))
        _require_not_started(milestone)
        if action == "delete":
            p.only(item, ("action", "milestone_id"), "a delete item")
            before = {f: jsonable(milestone[f]) for f in FIELDS}
            return {"action": "delete", "milestone_id": milestone.id, "before": before}
        p.only(item, ("action", "milestone_id", *FIELDS), "an edit item")
        fields = _require_change(milestone, p.milestone_fields(item, currency, s.policy, new=False))
        before = {f: jsonable(milestone[f]) for f in fields}
        return {"action": "edit", "milestone_id": milestone.id, **fields, "before": before}
    raise ValidationError(
        f"action must be add, edit or delete, not {action!r}",
        code="invalid_action",
        details={"field": "action"},
    )


def _require_not_started(milestone: Any) -> None:
    """FP1, MS12: a proposal changes only milestones that have not started."""
    if milestone["state"] != "pending":
        raise TransitionRejected(
            f"milestone {milestone.id} is {milestone['state']}: a proposal changes only "
            "milestones that have not started; a started milestone changes only through "
            "the client's change request (MS12)",
            code="milestone_started",
            details={"milestone_id": milestone.id, "state": milestone["state"]},
        )


def _require_change(current: Any, fields: dict[str, Any]) -> dict[str, Any]:
    """A change must change something: values equal to the milestone's are refused."""
    if all(current[f] == value for f, value in fields.items()):
        raise ValidationError(
            f"milestone {current['id']} already has these values: nothing would change",
            code="nothing_to_change",
            details={"milestone_id": current["id"]},
        )
    return fields


@effect("contract", "request_refund")
def request_refund(s: Step) -> None:
    """RF1: a refund of the remainder of a partial release, or of what an ended contract
    still holds for its active milestone. The money is set aside until settled."""
    contract, unit = s.contract, s.unit
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
            "reason": p.reason(s.payload) or "",
        },
        parent=s,
    )
    contract.set(open_refund_id=refund.record.id)
    if milestone_id is not None:
        unit.cascade("milestone", milestone_id, "hold_for_refund", s)


@effect("contract", "decline")
@effect("contract", "withdraw")
def return_escrow_of_offer(s: Step) -> None:
    """CT2: whatever was deposited for a withdrawn or declined offer goes back in full."""
    contract = s.contract
    if contract["active_milestone_id"] is not None:
        s.unit.cascade("milestone", contract["active_milestone_id"], "refund", s)
    s.unit.pay_out(s, "refund", contract["credit"], None, None)
    contract.set(credit=0)
    _cancel_proposal(s)


@effect("contract", "end")
def end_contract(s: Step) -> None:
    """CT4: escrow stays held; open proposals and change requests lapse."""
    _cancel_proposal(s)
    if s.contract["active_milestone_id"] is not None:
        milestone = s.unit.load("milestone", s.contract["active_milestone_id"])
        _cancel_change_request(s, milestone)


def _cancel_proposal(s: Step) -> None:
    if s.contract["open_proposal_id"] is not None:
        s.unit.cascade("proposal", s.contract["open_proposal_id"], "cancel", s)


# -- milestones (MS) ------------------------------------------------------------------


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
    named = s.unit.conn.execute(
        sa.select(sa.func.count()).where(
            _items.c.proposal_id == proposal_id, _items.c.milestone_id == milestone_id
        )
    ).scalar_one()
    if named:
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
    _cancel_change_request(s, s.record)  # CR5


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


def approved_amount(milestone: Mapping[str, Any] | Any) -> int:
    """MS10: what an approval without an amount pays: the agreed amount, or what the
    milestone holds if that is less (an increase never deposited is not paid). What is
    held beyond the amount (after an accepted decrease, CR3) stays for the client (MS9)."""
    return int(min(milestone["amount"], milestone["escrow"]))


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
    _cancel_change_request(s, milestone)  # CR5


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
    _require_change(s.record, fields)
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
    _cancel_change_request(s, s.record)


@effect("milestone", "release_hold", takes=("amount",))
def release_hold(s: Step) -> None:
    s.record.set(escrow=s.payload["amount"])


@effect("milestone", "refund")
def refund_milestone(s: Step) -> None:
    s.unit.pay_out(s, "refund", s.record["escrow"], s.record.id, None)
    s.record.set(escrow=0)
    s.contract.set(active_milestone_id=None)
    _cancel_change_request(s, s.record)


@effect("milestone", "award", takes=("amount",))
@effect("milestone", "split", takes=("amount",))
def settle_milestone(s: Step) -> None:
    s.record.set(released_amount=s.record["released_amount"] + s.payload["amount"])
    s.contract.set(active_milestone_id=None)


def _cancel_change_request(s: Step, milestone: Any) -> None:
    if milestone["open_change_request_id"] is not None:
        s.unit.cascade("change_request", milestone["open_change_request_id"], "cancel", s)


# -- change requests (CR) -------------------------------------------------------------


@effect("change_request", "accept")
def accept_change(s: Step) -> None:
    request = s.record
    values = {f: request[f] for f in FIELDS if request[f] is not None}
    s.unit.cascade("milestone", request["milestone_id"], "apply_change", s, **values)
    _detach_change_request(s)


@effect("change_request", "edit", takes=FIELDS)
def edit_change(s: Step) -> None:
    """CR2: the client edits the request; the freelancer gets a full lifetime again.
    The edited request replaces the fields it names and keeps the others."""
    fields = p.milestone_fields(s.payload, s.contract["currency"], s.policy, new=False)
    milestone = s.unit.load("milestone", s.record["milestone_id"])
    requested = {f: s.record[f] for f in FIELDS if s.record[f] is not None}
    _require_change(milestone, {**requested, **fields})
    s.details["changes"] = changes(milestone, {**requested, **fields})  # NT1
    s.record.set(**fields)


@effect("change_request", "reject")
@effect("change_request", "withdraw")
@effect("change_request", "expire")
@effect("change_request", "cancel")
def close_change(s: Step) -> None:
    _detach_change_request(s)


def _detach_change_request(s: Step) -> None:
    milestone = s.unit.load("milestone", s.record["milestone_id"])
    if milestone["open_change_request_id"] == s.record.id:
        milestone.set(open_change_request_id=None)


# -- proposals (FP) -------------------------------------------------------------------


@effect("proposal", "accept")
def accept_proposal(s: Step) -> None:
    """FP2: every change applies, together; if one cannot, none does."""
    s.contract.set(open_proposal_id=None)
    items = (
        s.unit.conn.execute(
            sa.select(_items).where(_items.c.proposal_id == s.record.id).order_by(_items.c.ordinal)
        )
        .mappings()
        .all()
    )
    for item in items:
        if item["action"] == "delete":
            s.unit.cascade("milestone", item["milestone_id"], "delete", s)
    for item in items:
        if item["action"] == "edit":  # the fields shown as changed (FP2), even to None
            changed = item["before"] or {f: None for f in FIELDS if item[f] is not None}
            values = {f: item[f] for f in changed}
            s.unit.cascade("milestone", item["milestone_id"], "edit", s, **values)
    adds = [
        {f: item[f] for f in FIELDS if item[f] is not None}
        for item in items
        if item["action"] == "add"
    ]
    if adds:
        _create_milestones(s, adds)


@effect("proposal", "decline")
@effect("proposal", "withdraw")
@effect("proposal", "cancel")
def close_proposal(s: Step) -> None:
    s.contract.set(open_proposal_id=None)


# -- refunds (RF) ---------------------------------------------------------------------


@effect("refund", "approve")
@effect("refund", "refund_by_default")
def refund_to_client(s: Step) -> None:
    """RF2: approved, or not answered in time: the money returns to the client."""
    _settle(s, to_client=s.record["amount"], to_freelancer=0)


@effect("refund", "resolve", takes=("to_client", "to_freelancer"))
def resolve_dispute(s: Step) -> None:
    """RF3: the dispute team decides: all to one party, or a split."""
    amount, currency = s.record["amount"], s.contract["currency"]
    split = {
        f: p.non_negative_amount(s.payload.get(f, 0), f) for f in ("to_client", "to_freelancer")
    }
    if split["to_client"] + split["to_freelancer"] != amount:
        raise ValidationError(
            f"to_client + to_freelancer must add up to the disputed "
            f"{format_money(amount, currency)}",
            code="split_does_not_add_up",
            details={"amount": amount},
        )
    _settle(s, **split)


def _settle(s: Step, to_client: int, to_freelancer: int) -> None:
    refund = s.record
    milestone_id = refund["milestone_id"]
    s.unit.pay_out(s, "refund", to_client, milestone_id, refund.id)
    s.unit.pay_out(s, "release", to_freelancer, milestone_id, refund.id)
    refund.set(to_client=to_client, to_freelancer=to_freelancer)
    s.contract.set(open_refund_id=None)
    if milestone_id is not None:
        if to_freelancer == 0:
            s.unit.cascade("milestone", milestone_id, "refund", s)
        else:
            event = "award" if to_client == 0 else "split"
            s.unit.cascade("milestone", milestone_id, event, s, amount=to_freelancer)


@effect("refund", "cancel")
def cancel_refund(s: Step) -> None:
    """X5: the client withdraws the request; the money goes back where it was held."""
    refund = s.record
    s.contract.set(open_refund_id=None)
    if refund["milestone_id"] is not None:
        s.unit.cascade(
            "milestone", refund["milestone_id"], "release_hold", s, amount=refund["amount"]
        )
    else:
        s.contract.add(credit=refund["amount"])


class _at_index:
    """Name the failing item of a list in a validation error."""

    def __init__(self, field: str, index: int) -> None:
        self.field, self.index = field, index

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, error: Any, _tb: Any) -> None:
        if isinstance(error, ValidationError):
            error.details.setdefault("index", self.index)
            error.message = f"{self.field}[{self.index}]: {error.message}"
            error.args = (error.message,)
