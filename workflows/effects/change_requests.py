"""What change request events do (CR): accepted values apply to the milestone at once."""

from __future__ import annotations

from workflows import payloads as p
from workflows.describe import changes
from workflows.effects.common import FIELDS, require_change
from workflows.registry import effect
from workflows.step import Step


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
    require_change(milestone, {**requested, **fields})
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
