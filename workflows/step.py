"""One transition being applied: what effects are given.

Effects (`workflows/effects/`) receive a :class:`Step`. They read the row being moved,
the locked contract and the payload, and act through `step.unit`, the unit of work: load
another row of the contract, create an entity, move another one (a cascade), or move
money. The unit of work is named here for type checking only: at run time this module
imports nothing of it, so the import graph stays acyclic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from storage.writes import Row
from workflows.policy import Policy

if TYPE_CHECKING:
    from workflows.unit_of_work import UnitOfWork


@dataclass
class Step:
    """One transition: the row it moves, from and to which state, and its history row."""

    unit: UnitOfWork
    entity: str
    record: Row
    event: str
    payload: Mapping[str, Any]
    from_state: str | None
    to_state: str
    version: int
    history_id: int
    # What changed, for people (NT1): fields before and after, a proposal's items. Goes
    # into the history row and the event's data.
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def contract(self) -> Row:
        return self.unit.contract

    @property
    def policy(self) -> Policy:
        return self.unit.policy
