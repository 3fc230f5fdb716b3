"""One transition being applied: what effects are given.

Effects (`workflows/effects/`) receive a :class:`Step`. They read the row being moved,
the locked contract and the payload, and act through `step.unit`: load another row of
the contract, create an entity, move another one (a cascade), or move money. `Unit` says
what they may ask of it; `workflows.unit_of_work.UnitOfWork` is what does it. This
module imports nothing of the unit of work, so no import circles back here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from storage.statements import Row, Statements
from workflows.policy import Policy


class Unit(Protocol):
    """The unit of work as an effect sees it."""

    tx: Statements
    now: datetime

    @property
    def policy(self) -> Policy:
        """The numbers of the contract's terms (TM1)."""
        ...

    @property
    def deployment_policy(self) -> Policy:
        """The deployment's own numbers, for the platform's guards that are no term of
        any contract (MS14)."""
        ...

    @property
    def contract(self) -> Row: ...

    def load(self, entity: str, entity_id: int) -> Row: ...

    def cascade(
        self, entity: str, entity_id: int, event: str, parent: Step, **payload: Any
    ) -> Step: ...

    def create(
        self,
        entity: str,
        values: Mapping[str, Any],
        parent: Step | None,
        details: Mapping[str, Any] | None = None,
    ) -> Step: ...

    def deposit(self, step: Step, amount: int, milestone_id: int | None) -> None: ...

    def pay_out(
        self, step: Step, kind: str, amount: int, milestone_id: int | None, refund_id: int | None
    ) -> None: ...


@dataclass(kw_only=True)
class Step:
    """One transition: the row it moves, from and to which state, and its history row."""

    unit: Unit
    entity: str
    record: Row
    event: str
    payload: Mapping[str, Any]
    from_state: str | None
    to_state: str
    version: int
    history_id: int = 0
    # What changed, for people (NT1): fields before and after, a proposal's items. Goes
    # into the history row and the event's data.
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def contract(self) -> Row:
        return self.unit.contract

    @property
    def policy(self) -> Policy:
        return self.unit.policy
