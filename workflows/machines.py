"""The escrow lifecycles, declared as python-statemachine classes.

Each machine declares its states and events, who may fire each event (PA1), named
guards that refuse with a precise reason, and the timers of the states that time out
("in review for the review window, then `auto_approve`"). Machines do no I/O: the
engine binds one to a carrier of the entity's state (`state_field="state"`), passes the
facts in a :class:`Context`, and persists whatever the machine decided.

Their building blocks (roles, timers, the context, the checks every class passes when it
is defined) are in `workflows/lifecycle.py`.
"""

from __future__ import annotations

from collections.abc import Mapping

from statemachine import State

from workflows.actors import Role
from workflows.lifecycle import (
    ADMIN,
    CLIENT,
    FREELANCER,
    PARTIES,
    SYSTEM,
    Context,
    EscrowMachine,
    TimedState,
    Timer,
    events_from,
    final_states,
    guard,
    party_events,
    party_events_from,
    timer_of,
    transition_table,
)

__all__ = [  # the building blocks are re-exported: callers need only this module
    "MACHINES",
    "ChangeRequestMachine",
    "Context",
    "ContractMachine",
    "EscrowMachine",
    "MilestoneMachine",
    "ProposalMachine",
    "RefundMachine",
    "TimedState",
    "Timer",
    "events_from",
    "party_events",
    "party_events_from",
    "timer_of",
    "transition_table",
]

_PLANNING = ["is_fixed_price", "no_pending_proposal"]


class ContractMachine(EscrowMachine):
    """A fixed-price (or hourly) contract: an offer, then active, then ended (CT)."""

    entity = "contract"

    offer = State(initial=True)
    active = State()
    # Not final: refunds of what is still held can be requested after the end (RF1).
    ended = State()
    # closed: ended with nothing held and nothing open, the engine closes it (X3).
    closed, withdrawn, declined = final_states(3)

    # Who may fire each event, and the rules it enforces (docs/rules.md; drawn on its edge).
    fired_by = {
        "accept": (FREELANCER, "CT2"),
        "decline": (FREELANCER, "CT2"),
        "withdraw": (CLIENT, "CT2"),
        "end": (PARTIES, "CT4"),
        "close": (SYSTEM, "X3"),
        "add_milestones": (CLIENT, "MS2", "CT3", "CT1"),
        "reorder_milestones": (CLIENT, "MS3"),
        "propose": (FREELANCER, "FP1", "FP2"),
        "request_refund": (CLIENT, "RF1", "X6"),
    }

    accept = offer.to(active)
    decline = offer.to(declined)
    withdraw = offer.to(withdrawn)
    end = active.to(ended)
    close = ended.to(closed, validators="nothing_left_open")
    # Planning milestones: on an offer or an active contract, as a self-transition.
    add_milestones = offer.to.itself(validators=_PLANNING) | active.to.itself(validators=_PLANNING)
    reorder_milestones = offer.to.itself(validators=_PLANNING) | active.to.itself(
        validators=_PLANNING
    )
    propose = offer.to.itself(validators=_PLANNING) | active.to.itself(validators=_PLANNING)
    request_refund = active.to.itself(validators="no_open_refund") | ended.to.itself(
        validators="no_open_refund"
    )

    # X3: a contract closes only once it holds nothing and nothing is active.
    nothing_left_open = guard(
        "escrow_still_held",
        lambda ctx: ctx.contract["held"] or ctx.contract["active_milestone_id"] is not None,
    )
    # X6: one open refund per contract.
    no_open_refund = guard("refund_pending", lambda ctx: ctx.contract["open_refund_id"] is not None)


class MilestoneMachine(EscrowMachine):
    """A milestone: planned, funded into escrow, submitted, reviewed, paid (MS)."""

    entity = "milestone"

    pending = State(initial=True)
    active = State()
    in_review = TimedState(
        timer=Timer("review_window", "auto_approve", rule="MS10", reminds=Role.CLIENT)
    )
    refund_requested = State()
    # settled: a disputed refund split between the parties (RF3).
    released, refunded, settled, deleted = final_states(4)

    # Who may fire each event, and the rules it enforces (docs/rules.md; drawn on its edge).
    fired_by = {
        "fund": (CLIENT, "MS5", "MS4", "X2"),
        # MS13: a freelancer never edits a milestone; it proposes (FP1).
        "edit": (CLIENT, "MS3", "MS12"),
        "delete": (CLIENT, "MS3", "CT3"),
        "submit": (FREELANCER, "MS6", "CR5"),
        "request_changes": (CLIENT, "MS7"),
        "release": (CLIENT, "MS8", "MS9", "MS14", "X11"),
        "deposit": (CLIENT, "CR3"),
        "auto_approve": (SYSTEM, "MS10", "NT2", "TM1"),
        "open_change_request": (CLIENT, "CR1"),
        "apply_change": (SYSTEM, "CR3"),
        "hold_for_refund": (SYSTEM, "RF1"),
        "release_hold": (SYSTEM, "X5"),
        "refund": (SYSTEM, "RF2", "CT2"),
        "award": (SYSTEM, "RF3"),
        "split": (SYSTEM, "RF3"),
    }

    fund = pending.to(active, validators=["contract_open", "no_other_milestone_active"])
    edit = pending.to.itself(validators=["contract_open", "no_pending_proposal"])
    delete = pending.to(deleted, validators=["contract_open", "no_pending_proposal"])
    submit = active.to(in_review, validators="contract_is_active")
    request_changes = in_review.to(active)
    release = active.to(released, validators="contract_accepted") | in_review.to(
        released, validators="contract_accepted"
    )
    deposit = active.to.itself(validators="escrow_short") | in_review.to.itself(
        validators="escrow_short"
    )
    auto_approve = in_review.to(released)
    open_change_request = active.to.itself(
        validators=["contract_is_active", "no_open_change_request", "no_pending_proposal"]
    )
    # Moves caused by other entities' transitions (the engine's cascades).
    apply_change = active.to.itself()
    hold_for_refund = active.to(refund_requested)
    release_hold = refund_requested.to(active)
    refund = active.to(refunded) | refund_requested.to(refunded)
    award = refund_requested.to(released)
    split = refund_requested.to(settled)

    # MS4: one milestone at a time is active; money is not deposited ahead.
    no_other_milestone_active = guard(
        "milestone_already_active", lambda ctx: ctx.contract["active_milestone_id"] is not None
    )
    # CR3: a deposit tops up a milestone whose amount grew past its escrow.
    escrow_short = guard("escrow_already_full", lambda ctx: ctx.row["escrow"] >= ctx.row["amount"])
    # CR1: at most one pending change request per milestone.
    no_open_change_request = guard(
        "change_request_pending", lambda ctx: ctx.row["open_change_request_id"] is not None
    )


class ChangeRequestMachine(EscrowMachine):
    """The client's request to change the active milestone (CR)."""

    entity = "change_request"

    pending = TimedState(
        initial=True,
        timer=Timer(
            "change_request_lifetime",
            "expire",
            rule="CR6",
            restart_on=frozenset({"edit"}),
            reminds=Role.FREELANCER,
        ),
    )
    accepted, rejected, withdrawn, expired, cancelled = final_states(5)

    # Who may fire each event, and the rules it enforces (docs/rules.md; drawn on its edge).
    fired_by = {
        "accept": (FREELANCER, "CR3"),
        "reject": (FREELANCER, "CR4"),
        "edit": (CLIENT, "CR2", "X7"),
        "withdraw": (CLIENT, "CR2"),
        "expire": (SYSTEM, "CR6", "NT2", "TM1"),
        "cancel": (SYSTEM, "CR5"),
    }

    accept = pending.to(accepted)
    reject = pending.to(rejected)
    edit = pending.to.itself()
    withdraw = pending.to(withdrawn)
    expire = pending.to(expired)
    cancel = pending.to(cancelled)


class ProposalMachine(EscrowMachine):
    """The freelancer's proposal to add, edit or delete future milestones (FP)."""

    entity = "proposal"

    pending = State(initial=True)
    accepted, declined, withdrawn, cancelled = final_states(4)

    # Who may fire each event, and the rules it enforces (docs/rules.md; drawn on its edge).
    fired_by = {
        "accept": (CLIENT, "FP2"),
        "decline": (CLIENT, "FP2"),
        "withdraw": (FREELANCER, "FP1"),
        "cancel": (SYSTEM, "FP2", "X9"),
    }

    accept = pending.to(accepted, validators="contract_open")
    decline = pending.to(declined)
    withdraw = pending.to(withdrawn)
    cancel = pending.to(cancelled)


class RefundMachine(EscrowMachine):
    """The client's request to get escrow back, and its dispute (RF)."""

    entity = "refund"

    requested = TimedState(
        initial=True,
        timer=Timer(
            "refund_response_time", "refund_by_default", rule="RF2", reminds=Role.FREELANCER
        ),
    )
    disputed = State()
    refunded, resolved, cancelled = final_states(3)

    # Who may fire each event, and the rules it enforces (docs/rules.md; drawn on its edge).
    fired_by = {
        "approve": (FREELANCER, "RF2"),
        "refund_by_default": (SYSTEM, "RF2", "NT2", "TM1"),
        "dispute": (FREELANCER, "RF2"),
        "resolve": (ADMIN, "RF3"),
        "cancel": (CLIENT, "X5"),
    }

    approve = requested.to(refunded)
    refund_by_default = requested.to(refunded)
    dispute = requested.to(disputed)
    resolve = disputed.to(resolved)
    cancel = requested.to(cancelled)


MACHINES: Mapping[str, type[EscrowMachine]] = {
    m.entity: m
    for m in (
        ContractMachine,
        MilestoneMachine,
        ChangeRequestMachine,
        ProposalMachine,
        RefundMachine,
    )
}
"""Every lifecycle, by entity name."""
