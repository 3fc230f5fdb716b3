"""What proposal events do (FP2): every change applies together, or none does."""

from __future__ import annotations

from storage import entities
from workflows.effects.common import FIELDS, create_milestones
from workflows.registry import effect
from workflows.step import Step


@effect("proposal", "accept")
def accept_proposal(step: Step) -> None:
    """FP2: every change applies, together; if one cannot, none does."""
    step.contract.set(open_proposal_id=None)
    items = entities.proposal_items(step.unit.tx.conn, step.record.id)
    for item in items:
        if item["action"] == "delete":
            step.unit.cascade("milestone", item["milestone_id"], "delete", step)
    for item in items:
        if item["action"] == "edit":  # the fields shown as changed (FP2), even to None
            changed = item["before"] or {f: None for f in FIELDS if item[f] is not None}
            values = {f: item[f] for f in changed}
            step.unit.cascade("milestone", item["milestone_id"], "edit", step, **values)
    adds = [
        {f: item[f] for f in FIELDS if item[f] is not None}
        for item in items
        if item["action"] == "add"
    ]
    if adds:
        create_milestones(step, adds)


@effect("proposal", "decline")
@effect("proposal", "withdraw")
@effect("proposal", "cancel")
def close_proposal(step: Step) -> None:
    step.contract.set(open_proposal_id=None)
