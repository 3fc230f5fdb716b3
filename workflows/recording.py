"""What every transition writes besides its row: the history row (PA3), the deadlines of
the states it leaves and enters (timers as data), and its event in the outbox (NT1)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from storage import deadlines, history, outbox
from storage.statements import Row, Statements
from workflows import reminders
from workflows.actors import Actor, Role
from workflows.lifecycle import Timer
from workflows.machines import MACHINES, timer_of
from workflows.policy import Policy, moved_by_timer
from workflows.step import Step
from workflows.terms import TermsBook


class Recorder:
    """Writes the record of each step of one transaction (who, why, when)."""

    def __init__(
        self,
        tx: Statements,
        actor: Actor,
        cause: str,
        now: datetime,
        terms: TermsBook,
        deadline: Mapping[str, Any] | None = None,
    ) -> None:
        self.tx = tx
        self.actor = actor
        self.cause = cause  # "request" or "timer"
        self.now = now
        self.terms = terms
        self.deadline = deadline  # the deadline firing, for a timer's transaction

    def policy_of(self, contract: Row) -> Policy:
        """TM1: the numbers of the terms the contract runs under, not the settings'."""
        return self.terms.of_contract(self.tx.conn, contract.values).policy

    def history(self, step: Step, contract: Row, parent: Step | None) -> int:
        """PA3: one history row per transition: who, when, why (request or timer); a
        cascade names the step that caused it."""
        timer = self.deadline if parent is None and self.cause == "timer" else None
        return history.record(
            self.tx,
            {
                "contract_id": contract.id,
                "entity": step.entity,
                "entity_id": step.record.id,
                "event": step.event,
                "from_state": step.from_state,
                "to_state": step.to_state,
                "version": step.version,
                "actor_role": self.actor.role.value,
                "actor_party": self.actor.party,
                "cause": self.cause,
                "caused_by": parent.history_id if parent else None,
                "deadline_id": timer["id"] if timer else None,
                "due_at": timer["due_at"] if timer else None,
                "at": self.now,
                "payload": jsonable({**step.payload, **step.details}),
            },
        )

    def annotate(self, step: Step) -> None:
        """Add what the effect found out (NT1: fields before and after) to the history."""
        history.annotate(self.tx, step.history_id, jsonable({**step.payload, **step.details}))

    def reschedule(self, step: Step, contract: Row) -> None:
        """A timer runs only while its state lasts (MS10, CR6, RF2): entering a timed state
        schedules its deadline, leaving one cancels it."""
        machine = MACHINES[step.entity]
        left = timer_of(machine, step.from_state) if step.from_state else None
        entered = timer_of(machine, step.to_state)
        firing = self.deadline["id"] if self.deadline is not None else None
        entity, entity_id = step.entity, step.record.id
        if step.from_state == step.to_state and entered is not None:
            if step.event in entered.restart_on:  # e.g. CR2: an edit restarts the lifetime
                deadlines.cancel_pending(self.tx, entity, entity_id, firing, self.now)
                self._schedule(step, contract, entered)
            else:  # keep the running deadline, the version it may fire on, what it moves
                moves = moved_by_timer(entered.event, step.record.values)
                deadlines.carry_pending(self.tx, entity, entity_id, firing, step.version, moves)
            return
        firing_this = self.deadline is not None and (
            self.deadline["entity"],
            self.deadline["entity_id"],
        ) == (entity, entity_id)
        # An entity has at most one pending deadline (one timer per state, a unique index
        # per event): when it is the one firing, there is nothing else to cancel.
        # Its reminders (NT2) fell due before it and were sent; one still pending (in a
        # retry's backoff) finds the entity moved on when it is swept, and goes stale.
        if left is not None and not firing_this:
            deadlines.cancel_pending(self.tx, entity, entity_id, firing, self.now)
        if entered is not None:
            self._schedule(step, contract, entered)

    def _schedule(self, step: Step, contract: Row, timer: Timer) -> None:
        """The timer's deadline, and its reminders (NT2), by the contract's terms (TM1)."""
        policy = self.policy_of(contract)
        deadline = {
            "contract_id": contract.id,
            "entity": step.entity,
            "entity_id": step.record.id,
            "event": timer.event,
            "due_at": self.now + policy.duration(timer.policy),
            "state_version": step.version,
        }
        moves = {
            "amount": moved_by_timer(timer.event, step.record.values),
            "currency": contract["currency"],
        }
        ahead = reminders.rows(policy, timer, deadline, self.now)
        deadlines.schedule(self.tx, [{**deadline, **moves}, *ahead], self.now)

    def publish(self, step: Step, contract: Row, recipients: list[str] | None = None) -> None:
        """NT1: the event, for the counterparty of who acted (both, for system/admin), or
        for `recipients` (NT2: a reminder is for the party who can act)."""
        parties = {Role.CLIENT: contract["freelancer_id"], Role.FREELANCER: contract["client_id"]}
        counterparty = parties.get(self.actor.role)
        if recipients is None:
            recipients = (
                [counterparty]
                if counterparty
                else [contract["client_id"], contract["freelancer_id"]]
            )
        outbox.append(
            self.tx,
            {
                "contract_id": contract.id,
                "history_id": step.history_id,
                "type": f"{step.entity}.{step.event}",
                "entity": step.entity,
                "entity_id": step.record.id,
                "recipients": recipients,
                "at": self.now,
                "data": {
                    "from": step.from_state,
                    "to": step.to_state,
                    "version": step.version,
                    "actor": self.actor.as_dict(),
                    "cause": self.cause,
                    **money_snapshot(step.record),
                    **(jsonable(step.details) if step.details else {}),
                },
            },
        )


def jsonable(values: Mapping[str, Any]) -> dict[str, Any]:
    """Dates and the like as text: history and events are JSON."""
    return json.loads(json.dumps(values, default=str)) if values else {}


_MONEY_COLUMNS = {
    "contract": ("held", "deposited", "released", "refunded", "credit", "currency"),
    "milestone": ("amount", "escrow", "released_amount"),
    "refund": ("amount", "to_client", "to_freelancer"),
    "change_request": ("amount",),
}


def money_snapshot(record: Row) -> dict[str, Any]:
    return {column: record.values.get(column) for column in _MONEY_COLUMNS.get(record.entity, ())}
