"""What every escrow lifecycle is made of: roles, timers, the context a guard sees, and
the base machine that checks each lifecycle when it is defined.

Every machine class is checked when it is defined (see :class:`_ValidatedMeta`): a
machine with an event no role may fire, or a timer that names an unknown event or
policy, does not import.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from statemachine import State, StateMachine
from statemachine.factory import StateMachineMetaclass

from storage.errors import TransitionRejected
from workflows.actors import Actor, Role
from workflows.policy import TIMER_POLICIES

CLIENT = frozenset({Role.CLIENT})
FREELANCER = frozenset({Role.FREELANCER})
PARTIES = frozenset({Role.CLIENT, Role.FREELANCER})
ADMIN = frozenset({Role.ADMIN})
SYSTEM = frozenset({Role.SYSTEM})


@dataclass(frozen=True)
class Timer:
    """After the policy's duration in the state, the engine fires `event` (as system)."""

    policy: str
    event: str
    # Self-transitions that give the other party a fresh full duration (e.g. an edited
    # change request); any other self-transition keeps the running deadline.
    restart_on: frozenset[str] = field(default_factory=frozenset)


class TimedState(State):
    """A state that times out: it carries its :class:`Timer`."""

    def __init__(self, *args: Any, timer: Timer, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timer = timer


@dataclass(frozen=True)
class Context:
    """The facts a guard may read. Plain values: the machine never touches the database."""

    entity: str
    row: Mapping[str, Any]
    contract: Mapping[str, Any]
    payload: Mapping[str, Any]
    actor: Actor


def refuse(code: str, message: str) -> TransitionRejected:
    return TransitionRejected(message, code=code)


class _ValidatedMeta(StateMachineMetaclass):
    """Checks each lifecycle's declarations when its class is created."""

    def __init__(cls, name: str, bases: tuple[type, ...], attrs: dict[str, Any]) -> None:
        super().__init__(name, bases, attrs)  # type: ignore[arg-type]
        if attrs.get("entity"):
            _check_declarations(cls)


def _check_declarations(cls: Any) -> None:
    events = {event.id for event in cls.events}
    declared = set(cls.permissions)
    if events != declared:
        raise TypeError(
            f"{cls.__name__}: permissions must name every event exactly; "
            f"missing {sorted(events - declared)}, unknown {sorted(declared - events)}"
        )
    for event, roles in cls.permissions.items():
        if not roles or not roles <= set(Role):
            raise TypeError(f"{cls.__name__}.{event}: roles must be a non-empty set of Role")
    for state in cls.states:
        timer = getattr(state, "timer", None)
        if timer is None:
            continue
        if timer.policy not in TIMER_POLICIES:
            raise TypeError(f"{cls.__name__}.{state.id}: unknown timer policy {timer.policy!r}")
        leaving = {t.event for t in state.transitions if t.target is not state}
        if timer.event not in leaving:
            raise TypeError(
                f"{cls.__name__}.{state.id}: timer event {timer.event!r} must leave the state"
            )
        if cls.permissions[timer.event] != SYSTEM:
            raise TypeError(f"{cls.__name__}.{timer.event}: a timer event is the system's alone")


class EscrowMachine(StateMachine, metaclass=_ValidatedMeta):
    """Base of the lifecycles: shared guards and the declarations the engine reads."""

    entity: ClassVar[str] = ""
    permissions: ClassVar[Mapping[str, frozenset[Role]]] = {}

    # -- guards shared by several lifecycles -----------------------------------

    def contract_open(self, ctx: Context) -> None:
        """The contract is an offer or active: milestones can still be planned and funded."""
        if ctx.contract["state"] not in ("offer", "active"):
            raise refuse(
                "contract_closed",
                f"contract {ctx.contract['id']} is {ctx.contract['state']}: "
                "milestones can only be changed or funded on an offer or an active contract",
            )

    def contract_is_active(self, ctx: Context) -> None:
        if ctx.contract["state"] != "active":
            raise refuse(
                "contract_not_active",
                f"contract {ctx.contract['id']} is {ctx.contract['state']}, not active",
            )

    def contract_accepted(self, ctx: Context) -> None:
        """The freelancer accepted the contract at some point (it is active or ended)."""
        if ctx.contract["state"] not in ("active", "ended"):
            raise refuse(
                "contract_not_accepted",
                f"contract {ctx.contract['id']} is {ctx.contract['state']}: "
                "payment can be released only once the freelancer has accepted it",
            )

    def is_fixed_price(self, ctx: Context) -> None:
        """CT1: milestones exist only on fixed-price contracts."""
        if ctx.contract["kind"] != "fixed":
            raise refuse(
                "not_fixed_price",
                f"contract {ctx.contract['id']} is an {ctx.contract['kind']} contract: "
                "milestones exist only on fixed-price contracts",
            )

    def no_pending_proposal(self, ctx: Context) -> None:
        """FP3: while a proposal waits, the client makes no other milestone change."""
        if ctx.contract["open_proposal_id"] is not None:
            raise refuse(
                "proposal_pending",
                f"proposal {ctx.contract['open_proposal_id']} is waiting for the client: "
                "accept or decline it before changing milestones",
            )
