"""What several lifecycles' effects share: limits, checks and the cascades that close
what an event leaves behind."""

from __future__ import annotations

from typing import Any

from storage import entities
from storage.errors import TransitionRejected, ValidationError
from workflows import payloads as p
from workflows.step import Step

FIELDS = p.MILESTONE_FIELDS


def check_limit(step: Step, more: int) -> None:
    """CT3: at most the limit of milestones; deleted ones do not count."""
    contract, limit = step.contract, step.policy.max_milestones
    if contract["milestone_count"] + more > limit:
        raise TransitionRejected(
            f"contract {contract.id} has {contract['milestone_count']} milestones and the limit "
            f"is {limit}: adding {more} more is refused; start a new contract for more work",
            code="milestone_limit_reached",
            details={"limit": limit, "count": contract["milestone_count"]},
        )


def create_milestones(step: Step, new: list[dict[str, Any]]) -> None:
    contract, unit = step.contract, step.unit
    check_limit(step, len(new))
    last = entities.last_position(unit.tx, contract.id)
    for offset, fields in enumerate(new, start=1):
        unit.create(
            "milestone",
            {
                "due_date": None,
                **fields,
                "contract_id": contract.id,
                "position": last + offset,
                "escrow": 0,
                "released_amount": 0,
                "open_change_request_id": None,
            },
            parent=step,
        )
    contract.add(milestone_count=len(new))


def require_not_started(milestone: Any) -> None:
    """FP1, MS12: a proposal changes only milestones that have not started."""
    if milestone["state"] != "pending":
        raise TransitionRejected(
            f"milestone {milestone.id} is {milestone['state']}: a proposal changes only "
            "milestones that have not started; a started milestone changes only through "
            "the client's change request (MS12)",
            code="milestone_started",
            details={"milestone_id": milestone.id, "state": milestone["state"]},
        )


def require_change(current: Any, fields: dict[str, Any]) -> dict[str, Any]:
    """X12, X13: a change must change something: values equal to the milestone's are
    refused."""
    if all(current[f] == value for f, value in fields.items()):
        raise ValidationError(
            f"milestone {current['id']} already has these values: nothing would change",
            code="nothing_to_change",
            details={"milestone_id": current["id"]},
        )
    return fields


def cancel_proposal(step: Step) -> None:
    if step.contract["open_proposal_id"] is not None:
        step.unit.cascade("proposal", step.contract["open_proposal_id"], "cancel", step)


def cancel_change_request(step: Step, milestone: Any) -> None:
    if milestone["open_change_request_id"] is not None:
        step.unit.cascade("change_request", milestone["open_change_request_id"], "cancel", step)


class at_index:
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
