"""The words of the API's contract as OpenAPI enums and formats: entities, collections,
states, events, roles and currencies, read off the machines and the policy once.

Each is a `str` in Python and on the wire (nothing is converted); the OpenAPI document
gives its values, so a generated client has an enum and a typo fails before a request.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import WithJsonSchema

from workflows.actors import Role
from workflows.machines import MACHINES
from workflows.policy import ISO_4217

COLLECTIONS = {
    "contracts": "contract",
    "milestones": "milestone",
    "change_requests": "change_request",
    "proposals": "proposal",
    "refunds": "refund",
}
"""The API's name of each entity's collection."""


ENUMS: dict[str, tuple[list[str], str]] = {}
"""Each enum by the name the document gives it (`#/components/schemas/NAME`): its values
and what it is. `escrowflow.api.contract` replaces each inline copy by a reference, so a
generated client has one enum class for each, not one per field."""


def _enum(values: Any, description: str, name: str) -> WithJsonSchema:
    ENUMS[name] = (sorted(set(values)), description)
    return WithJsonSchema(
        {"type": "string", "enum": sorted(set(values)), "description": description}
    )


ENTITIES = sorted(MACHINES)
STATES = sorted({state.value for machine in MACHINES.values() for state in machine.states})
EVENTS = sorted({"create", *(e for machine in MACHINES.values() for e in machine.permissions)})
ROLES = [role.value for role in Role]
CURRENCIES = sorted(ISO_4217)

EntityName = Annotated[str, _enum(ENTITIES, "An entity of a contract's lifecycle.", "Entity")]
CollectionName = Annotated[str, _enum(COLLECTIONS, "A collection of the API.", "Collection")]
StateName = Annotated[str, _enum(STATES, "A state of one of the lifecycles.", "State")]
EventName = Annotated[str, _enum(EVENTS, "An event of one of the lifecycles (or create).", "Event")]
RoleName = Annotated[str, _enum(ROLES, "Who acted: a party's role, or system (a timer).", "Role")]
Currency = Annotated[str, _enum(ISO_4217, "ISO 4217 code, e.g. USD.", "Currency")]
LedgerKind = Annotated[str, _enum(("deposit", "release", "refund"), "What moved.", "LedgerKind")]
Timestamp = Annotated[
    str,
    WithJsonSchema({"type": "string", "format": "date-time", "description": "ISO 8601, UTC."}),
]
"""A moment as the API writes it (`2026-01-19T09:00:00+00:00`)."""
OptionalTimestamp = Annotated[
    str | None,
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}],
            "description": "ISO 8601, UTC; null if it has not happened.",
        }
    ),
]
