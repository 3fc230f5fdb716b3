"""The machines' declarations, checked without a database."""

from __future__ import annotations

import pytest
from statemachine import State

from storage.errors import TransitionRejected
from workflows.actors import Actor, Role
from workflows.decision import Decider
from workflows.machines import MACHINES, Context, EscrowMachine, TimedState, Timer, timer_of


def test_every_event_declares_its_roles_and_timers_are_system_only() -> None:
    for machine in MACHINES.values():
        assert set(machine.permissions) == {e.id for e in machine.events}
        for state in machine.states:
            timer = timer_of(machine, state.id)
            if timer is not None:
                assert machine.permissions[timer.event] == {Role.SYSTEM}


def test_timeouts_are_declared_on_their_states() -> None:
    assert timer_of(MACHINES["milestone"], "in_review") == Timer(
        "review_window", "auto_approve", rule="MS10", reminds=Role.CLIENT
    )
    assert timer_of(MACHINES["change_request"], "pending").policy == "change_request_lifetime"
    assert timer_of(MACHINES["refund"], "requested").event == "refund_by_default"


def test_a_machine_missing_a_permission_does_not_import() -> None:
    with pytest.raises(TypeError, match="permissions must name every event"):

        class Broken(EscrowMachine):
            entity = "broken"
            a = State(initial=True)
            b = State(final=True)
            go = a.to(b)
            fired_by = {}


def test_a_timer_on_an_unknown_policy_does_not_import() -> None:
    with pytest.raises(TypeError, match="unknown timer policy"):

        class Broken(EscrowMachine):
            entity = "broken"
            a = TimedState(initial=True, timer=Timer("forever", "go", rule="MS10"))
            b = State(final=True)
            go = a.to(b)
            fired_by = {"go": (frozenset({Role.SYSTEM}), "MS10")}


def test_a_machine_reused_after_a_final_state_still_decides() -> None:
    machines = Decider()
    ctx = Context(
        "milestone",
        {"id": 1, "escrow": 5, "amount": 5},
        {"id": 1, "state": "active"},
        {},
        Actor(Role.CLIENT, "a"),
    )
    assert machines.decide("milestone", "in_review", "release", ctx) == "released"
    first = machines.bound["milestone"][0]
    assert machines.decide("milestone", "active", "submit", ctx) == "in_review"
    # Restarted, not rebuilt: if a library upgrade breaks this, we rebuild (slower).
    assert machines.bound["milestone"][0] is first


def test_an_engine_always_has_the_effects_of_every_event() -> None:
    """A fresh process that only fires timers must still move money (a daemon did not)."""
    import subprocess
    import sys

    code = (
        "import types, sqlalchemy as sa\n"
        "from workflows.registry import EFFECTS\n"
        "assert not EFFECTS\n"
        "from workflows.engine import EscrowEngine\n"
        "from workflows.clock import SystemClock\n"
        "from workflows.policy import Policy\n"
        "EscrowEngine(sa.create_engine('sqlite://'), Policy(), SystemClock())\n"
        "assert ('milestone', 'auto_approve') in EFFECTS, sorted(EFFECTS)\n"
        "assert ('refund', 'refund_by_default') in EFFECTS\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_transition_table_agrees_with_the_machines() -> None:
    """Every unguarded (state, event) the engine looks up gives what `send` gives; a
    guarded one gives the library's answer and its refusals (the whole test suite also
    decides every event both ways: `Decider.cross_check`)."""
    from workflows.decision import Carrier
    from workflows.machines import transition_table

    ctx = Context("x", {}, {}, {}, Actor(Role.SYSTEM, "t"))
    checked = 0
    for machine in MACHINES.values():
        table = transition_table(machine)
        assert table, machine.__name__
        for (state, event), (target, guards) in table.items():
            if guards:
                continue
            carrier = Carrier()
            bound = machine(model=carrier, state_field="state")
            carrier.state = state
            bound.send(event, ctx=ctx)
            assert carrier.state == target, (machine.__name__, state, event)
            checked += 1
    milestone = transition_table(MACHINES["milestone"])
    assert milestone[("in_review", "auto_approve")] == ("released", ())
    target, guards = milestone[("pending", "fund")]
    assert target == "active"
    assert [g.refuses for g in guards] == ["contract_closed", "milestone_already_active"]  # type: ignore[attr-defined]
    assert checked > 20


def test_a_guarded_decision_by_the_table_is_the_librarys() -> None:
    decider = Decider()
    actor = Actor(Role.CLIENT, "a")
    contracts = [
        {"id": 1, "state": state, "active_milestone_id": active}
        for state in ("offer", "active", "ended")
        for active in (None, 7)
    ]
    for contract in contracts:
        ctx = Context("milestone", {"id": 8, "escrow": 0, "amount": 5}, contract, {}, actor)
        answers = []
        for decide in (decider.send, decider.decide):
            try:
                answers.append(decide("milestone", "pending", "fund", ctx))
            except TransitionRejected as refused:
                answers.append(refused.code)
        assert answers[0] == answers[1], contract
