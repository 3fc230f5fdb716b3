"""What every escrow lifecycle is made of: roles, timers, the context a guard sees, and
the base machine that checks each lifecycle when it is defined.

Every machine class is checked when it is defined (see :class:`_ValidatedMeta`): a
machine with an event no role may fire, or a timer that names an unknown event or
policy, does not import.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from statemachine import State, StateMachine
from statemachine.factory import StateMachineMetaclass

from storage.errors import TransitionRejected
from workflows.actors import Actor, Role
from workflows.policy import TIMER_POLICIES
from workflows.refusals import REFUSALS

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
    rule: str  # the rule the timer enforces, e.g. "MS10": drawn on its edge
    # Self-transitions that give the other party a fresh full duration (e.g. an edited
    # change request); any other self-transition keeps the running deadline.
    restart_on: frozenset[str] = field(default_factory=frozenset)
    # NT2: the party who can still act before it fires, and is reminded.
    reminds: Role | None = None


def final_states(count: int) -> tuple[State, ...]:
    """`count` final states, named by the names they are assigned to, in that order."""
    return tuple(State(final=True) for _ in range(count))


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


Validator = Callable[[Any, Context], None]


def guard(code: str, refused: Callable[[Context], object]) -> Validator:
    """A validator (python-statemachine calls it by name before the event): it refuses the
    event with `code` when `refused(ctx)` holds. The message is the code's in
    :data:`workflows.refusals.REFUSALS`, formatted with the contract and the entity's row."""
    message = REFUSALS[code]  # an unknown code fails when the machine is defined

    def check(machine: Any, ctx: Context) -> None:
        if refused(ctx):
            raise TransitionRejected(message.format(contract=ctx.contract, row=ctx.row), code=code)

    check.refuses = code  # type: ignore[attr-defined]  # made here: see `transition_table`
    return check


class _ValidatedMeta(StateMachineMetaclass):
    """Checks each lifecycle's declarations when its class is created."""

    def __init__(cls, name: str, bases: tuple[type, ...], attrs: dict[str, Any]) -> None:
        super().__init__(name, bases, attrs)  # type: ignore[arg-type]
        if attrs.get("entity"):
            fired_by = attrs.get("fired_by", {})
            cls.permissions = {event: roles for event, (roles, *_) in fired_by.items()}
            cls.rules = {event: tuple(rules) for event, (_, *rules) in fired_by.items()}
            _check_declarations(cls)


def _check_declarations(cls: Any) -> None:
    events = {event.id for event in cls.events}
    declared = set(cls.permissions)
    if events != declared:
        raise TypeError(
            f"{cls.__name__}: permissions must name every event exactly (declare each in "
            "fired_by); "
            f"missing {sorted(events - declared)}, unknown {sorted(declared - events)}"
        )
    for event, roles in cls.permissions.items():
        if not roles or not roles <= set(Role):
            raise TypeError(f"{cls.__name__}.{event}: roles must be a non-empty set of Role")
    if set(cls.rules) != events or not all(cls.rules.values()):
        raise TypeError(
            f"{cls.__name__}: rules must name the rule IDs of every event; "
            f"missing {sorted(events - set(cls.rules))}, unknown {sorted(set(cls.rules) - events)}"
        )
    for state in cls.states:
        timer = getattr(state, "timer", None)
        if timer is None:
            continue
        if timer.policy not in TIMER_POLICIES:
            raise TypeError(f"{cls.__name__}.{state.id}: unknown timer policy {timer.policy!r}")
        if timer.reminds not in (Role.CLIENT, Role.FREELANCER):
            raise TypeError(
                f"{cls.__name__}.{state.id}: the timer must name the party it reminds (NT2)"
            )
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
    # Declared by each lifecycle, one line an event: `"fund": (CLIENT, "MS5", "MS4")`,
    # who may fire it and the rules it enforces (docs/rules.md, drawn on its edges).
    fired_by: ClassVar[Mapping[str, tuple[Any, ...]]] = {}
    # Derived from `fired_by` when the class is defined: what the engine reads.
    permissions: ClassVar[Mapping[str, frozenset[Role]]] = {}
    rules: ClassVar[Mapping[str, tuple[str, ...]]] = {}

    # -- guards shared by several lifecycles -----------------------------------

    # MS3, X1: milestones are planned and funded only on an offer or an active contract.
    contract_open = guard(
        "contract_closed", lambda ctx: ctx.contract["state"] not in ("offer", "active")
    )
    # MS6, CR1, X4: work is submitted and changed only while the contract is active.
    contract_is_active = guard("contract_not_active", lambda ctx: ctx.contract["state"] != "active")
    # MS8: payment is released once the freelancer has accepted (active or ended).
    contract_accepted = guard(
        "contract_not_accepted", lambda ctx: ctx.contract["state"] not in ("active", "ended")
    )
    # CT1: milestones exist only on fixed-price contracts.
    is_fixed_price = guard("not_fixed_price", lambda ctx: ctx.contract["kind"] != "fixed")
    # FP3, X8: while a proposal waits, the client makes no other milestone change.
    no_pending_proposal = guard(
        "proposal_pending", lambda ctx: ctx.contract["open_proposal_id"] is not None
    )


def timer_of(machine: type[EscrowMachine], state: str) -> Timer | None:
    return getattr(machine.states_map[state], "timer", None)


def events_from(machine: type[EscrowMachine], state: str) -> list[str]:
    """The events declared out of `state`, in declaration order (guards not evaluated)."""
    seen: dict[str, None] = {}
    for transition in machine.states_map[state].transitions:
        for event in transition.events:
            seen[str(event)] = None
    return list(seen)


def party_events(machine: type[EscrowMachine]) -> list[str]:
    """The events a person may fire (PA1): every event but the engine's own moves."""
    return [event for event, roles in machine.permissions.items() if roles != SYSTEM]


def party_events_from(machine: type[EscrowMachine], state: str) -> list[str]:
    """The events a person may fire out of `state` (guards not evaluated)."""
    return [e for e in events_from(machine, state) if machine.permissions[e] != SYSTEM]


def transition_table(
    machine: type[EscrowMachine],
) -> dict[tuple[str, str], tuple[str, tuple[Validator, ...]]]:
    """(state, event) -> (target, guards) for events with a single transition out of a
    state whose only callbacks are guards made by `guard()`. Our machines declare no
    actions, so for these the machine's answer is its declaration once its guards, in
    their order, let the event through: the engine decides these by the table instead of
    running the library's event loop (a tenth of the time). tests/unit/test_machines.py
    checks the entries against `send`, and the test suite decides every event both ways
    (`Decider.cross_check`)."""
    table: dict[tuple[str, str], tuple[str, tuple[Validator, ...]]] = {}
    for state in machine.states:
        by_event: dict[str, list[Any]] = {}
        for transition in state.transitions:
            for event in transition.events:
                by_event.setdefault(str(event), []).append(transition)
        for event, transitions in by_event.items():
            (transition, *others) = transitions
            guards = [getattr(machine, str(spec.func), None) for spec in transition.validators]
            if (
                others
                or _has_callbacks(machine, transition, ("cond", "before", "on", "after"))
                or not all(hasattr(check, "refuses") for check in guards)
            ):
                continue
            table[(state.id, event)] = (transition.target.id, tuple(guards))  # type: ignore[arg-type]
    return table


def _has_callbacks(machine: type[EscrowMachine], transition: Any, kinds: tuple[str, ...]) -> bool:
    """A callback of these `kinds` on the transition. Naming conventions (`on_<event>`,
    ...) count only if the machine defines such a method, as it then would run."""
    if any(
        not spec.is_convention or hasattr(machine, str(spec.func))
        for name in kinds
        for spec in getattr(transition, name)
    ):
        return True
    conventions = ("on_enter_", "on_exit_", "before_", "after_")
    return any(attr.startswith(conventions) for attr in vars(machine))
