"""The request body of each event a party may fire: one model per event that takes a
payload, and `EventNote` (a reason, optional, the body itself optional) for the others.

The engine names what each event takes (`takes` of its effect) and checks it again;
these models give it a type in the OpenAPI document, so a generated client has a class
for a release's amount, a resolution's split or a change's fields.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, StrictBool

from escrowflow.schemas import (
    Amount,
    MilestoneChange,
    MilestoneOrder,
    MilestonesCreate,
    ProposalCreate,
    Reason,
    RefundCreate,
    example,
)
from workflows.actors import Role
from workflows.machines import MACHINES


class EventNote(BaseModel):
    """Any event may say why; the body may be left out."""

    model_config = example({"reason": "agreed on the phone"}, strict=True)
    reason: Reason | None = Field(default=None, max_length=2000)


class MilestoneRelease(BaseModel):
    """MS9, MS14: all of the escrow by default, or `amount` of it; above the limit only
    as a bonus."""

    model_config = example({"amount": 20000}, strict=True)
    amount: Amount | None = Field(
        default=None, description="Minor units; left out, everything in escrow."
    )
    bonus: StrictBool | None = Field(
        default=None,
        description="MS14: a release above the limit (a multiple of the agreed amount) "
        "is meant: a bonus.",
    )
    reason: Reason | None = Field(default=None, max_length=2000)


class RefundResolution(BaseModel):
    """RF3: the dispute team splits the refund's amount; the two parts add up to it."""

    model_config = example({"to_client": 30000, "to_freelancer": 20000}, strict=True)
    to_client: Amount = Field(description="Minor units back to the client.")
    to_freelancer: Amount = Field(description="Minor units paid to the freelancer.")
    reason: Reason | None = Field(default=None, max_length=2000)


BODIES: dict[tuple[str, str], type[BaseModel]] = {
    ("contract", "add_milestones"): MilestonesCreate,
    ("contract", "reorder_milestones"): MilestoneOrder,
    ("contract", "propose"): ProposalCreate,
    ("contract", "request_refund"): RefundCreate,
    ("milestone", "edit"): MilestoneChange,
    ("milestone", "open_change_request"): MilestoneChange,
    ("milestone", "release"): MilestoneRelease,
    ("change_request", "edit"): MilestoneChange,
    ("refund", "resolve"): RefundResolution,
}
"""The events whose body is more than a reason (a test checks each against the engine's
`takes`)."""


def party_events() -> list[tuple[str, str]]:
    """(entity, event) of every event a party may fire, in the machines' order (the
    engine's own moves, system's, are nobody's to ask for: PA1)."""
    return [
        (entity, event)
        for entity, machine in MACHINES.items()
        for event, roles in machine.permissions.items()
        if any(role is not Role.SYSTEM for role in roles)
    ]


def body_of(entity: str, event: str) -> type[BaseModel]:
    return BODIES.get((entity, event), EventNote)
