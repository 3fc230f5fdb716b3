"""What each event does besides changing state: the effects, registered by event."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from workflows.machines import MACHINES
from workflows.step import Step

Run = Callable[[Step], None]


@dataclass(frozen=True)
class Effect:
    run: Run
    takes: tuple[str, ...]  # the payload fields the event accepts


EFFECTS: dict[tuple[str, str], Effect] = {}
"""(entity, event) -> the effect that runs after the machine accepted the event."""


def effect(entity: str, event: str, *, takes: tuple[str, ...] = ()) -> Callable[[Run], Run]:
    """Register what `event` on `entity` does, and the payload fields it takes."""

    def register(run: Run) -> Run:
        if event not in MACHINES[entity].permissions:
            raise TypeError(f"effect for unknown event {entity}.{event}")
        EFFECTS[(entity, event)] = Effect(run, takes)
        return run

    return register
