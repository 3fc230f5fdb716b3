"""The decision: which state an event leads to, asked of python-statemachine.

The only code that touches the library's internals. Machines do no I/O: they are given
the state and a context, and answer with the new state or `TransitionNotAllowed`.
"""

from __future__ import annotations

import threading

from workflows.machines import MACHINES, Context, EscrowMachine, unguarded_transitions


class Carrier:
    """The model a machine is bound to: it only holds the state being decided on."""

    state: str | None = None


def _restart(machine: EscrowMachine) -> bool:
    """Let a machine that reached a final state take events again.

    python-statemachine stops a machine's engine in a final state, and has no public way
    to restart it; binding a new machine costs ~0.75 ms, four times a whole decision. The
    carrier is about to be given another row's state, so restarting is sound. If a
    library release moves this flag, we fall back to binding a new machine (and
    tests/unit/test_machines.py says so).
    """
    engine = getattr(machine, "_engine", None)
    if engine is None or not isinstance(getattr(engine, "running", None), bool):
        return False
    engine.running = True
    return not machine.is_terminated


_UNGUARDED = {entity: unguarded_transitions(machine) for entity, machine in MACHINES.items()}


class Decider(threading.local):
    """One bound machine per lifecycle per thread: building one costs far more than
    sending it an event, and a machine is not safe to share between threads."""

    def __init__(self) -> None:
        self.bound: dict[str, tuple[EscrowMachine, Carrier]] = {}

    def decide(self, entity: str, state: str, event: str, ctx: Context) -> str:
        """The state `event` leads to from `state` (guards see `ctx`)."""
        target = _UNGUARDED[entity].get((state, event))
        if target is not None:
            return target
        bound = self.bound.get(entity)
        if bound is not None and bound[0].is_terminated and not _restart(bound[0]):
            bound = None
        if bound is None:
            carrier = Carrier()
            bound = (MACHINES[entity](model=carrier, state_field="state"), carrier)
            self.bound[entity] = bound
        machine, carrier = bound
        carrier.state = state
        machine.send(event, ctx=ctx)
        assert carrier.state is not None
        return carrier.state
