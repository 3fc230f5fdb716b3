"""The decision: which state an event leads to, as the machines declare it.

Machines do no I/O: they are given the state and a context, and answer with the new
state, a refusal by one of their guards, or `TransitionNotAllowed`. Where a state has
one transition for the event and its only callbacks are our guards, the answer is read
from a table built from the declarations once (`transition_table`); everything else is
sent to python-statemachine. The only code that touches the library's internals.
"""

from __future__ import annotations

import threading

from storage.errors import TransitionRejected
from workflows.lifecycle import Validator
from workflows.machines import MACHINES, Context, EscrowMachine, transition_table


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


_TABLE = {entity: transition_table(machine) for entity, machine in MACHINES.items()}


class Decider(threading.local):
    """One bound machine per lifecycle per thread: building one costs far more than
    sending it an event, and a machine is not safe to share between threads."""

    # The test suite sets this: every decision taken from the table is also asked of the
    # library, and they must agree (the same state, or the same refusal).
    cross_check = False

    def __init__(self) -> None:
        self.bound: dict[str, tuple[EscrowMachine, Carrier]] = {}

    def decide(self, entity: str, state: str, event: str, ctx: Context) -> str:
        """The state `event` leads to from `state` (guards see `ctx`)."""
        entry = _TABLE[entity].get((state, event))
        if entry is None:
            return self.send(entity, state, event, ctx)
        if self.cross_check:
            self._agree(entity, state, event, ctx)
        return _by_table(*entry, ctx)

    def send(self, entity: str, state: str, event: str, ctx: Context) -> str:
        """The library's answer: its machine, bound to a carrier in `state`, is sent
        `event`."""
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

    def _agree(self, entity: str, state: str, event: str, ctx: Context) -> None:
        answers = []
        for decide in (self.send, lambda *_: _by_table(*_TABLE[entity][(state, event)], ctx)):
            try:
                answers.append(decide(entity, state, event, ctx))
            except TransitionRejected as refused:
                answers.append(f"refused: {refused.code}")
        library, table = answers
        assert library == table, f"{entity} {state} --{event}-->: library {library}, table {table}"


def _by_table(target: str, guards: tuple[Validator, ...], ctx: Context) -> str:
    for check in guards:  # in their declared order: the first refusal is the answer
        check(None, ctx)
    return target
