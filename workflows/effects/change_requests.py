"""What change request events do (CR): accepted values apply to the milestone at once."""

from __future__ import annotations

from workflows import payloads as p
from workflows.describe import changes
from workflows.effects.common import FIELDS, require_change
from workflows.registry import effect
from workflows.step import Step


@effect("change_request", "accept")
def accept_change(step: Step) -> None:
    request = step.record
    values = {f: request[f] for f in FIELDS if request[f] is not None}
    step.unit.cascade("milestone", request["milestone_id"], "apply_change", step, **values)
    _detach_change_request(step)


@effect("change_request", "edit", takes=FIELDS)
def edit_change(step: Step) -> None:
    """CR2: the client edits the request; the freelancer gets a full lifetime again.
    The edited request replaces the fields it names and keeps the others."""
    fields = p.milestone_fields(step.payload, step.contract["currency"], step.policy, new=False)
    milestone = step.unit.load("milestone", step.record["milestone_id"])
    requested = {f: step.record[f] for f in FIELDS if step.record[f] is not None}
    require_change(milestone, {**requested, **fields})
    step.details["changes"] = changes(milestone, {**requested, **fields})  # NT1
    step.record.set(**fields)


@effect("change_request", "reject")
@effect("change_request", "withdraw")
@effect("change_request", "expire")
@effect("change_request", "cancel")
def close_change(step: Step) -> None:
    _detach_change_request(step)


def _detach_change_request(step: Step) -> None:
    milestone = step.unit.load("milestone", step.record["milestone_id"])
    if milestone["open_change_request_id"] == step.record.id:
        milestone.set(open_change_request_id=None)
