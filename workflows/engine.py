"""The engine: applies one event to one entity in one transaction (a façade).

`EscrowEngine.apply()`: lock the contract row (every entity belongs to one contract, so all
work on a contract is serialised and lock order is always the same), honour the
idempotency key (ES3), check role and party (PA1, PA2), check the expected version, let
the machine decide, then write in the same transaction the new state and version, a
history row (PA3), ledger entries (ES1), deadlines and an event (NT1). Follow-on moves
of other entities ("cascades", e.g. a submission cancels the pending change request,
CR5) run through the same path inside the same transaction and record what caused them.

The work is done by small modules, each with one job: `unit_of_work` (the transaction),
`decision` (the machines), `access` (PA1, PA2, X10), `idempotency` (ES3), `recording`
(history, deadlines, events), `effects/` (what events do), `deadline_admin`; all SQL is
in `storage/`, one module per table. Firing deadlines is the sweeper's job
(`workflows/sweeper.py`), which uses this engine; the engine does not import it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.engine import Engine as DBEngine

import workflows.effects  # noqa: F401  (registers what every event does)
from storage import deadlines
from storage.db import transaction
from storage.errors import (
    ConflictError,
    NotFound,
    VersionConflict,
)
from storage.fastpath import FastPath
from storage.statements import Batch, Row, Statements
from workflows import access, deadline_admin, idempotency, reminders
from workflows.actors import SYSTEM, Actor
from workflows.approvals import SecondApproval
from workflows.bulk_admin import BulkAdmin
from workflows.clock import Clock, skew_of
from workflows.decision import Decider
from workflows.effects.contracts import offer_contract
from workflows.machines import MACHINES, EscrowMachine, party_events, timer_of
from workflows.policy import SECOND_APPROVAL_ABOVE, Policy
from workflows.recording import Recorder
from workflows.retry import DEADLINE_RETRY, RetryStrategy
from workflows.step import Step
from workflows.terms import TermsBook
from workflows.terms_admin import TermsAdmin
from workflows.unit_of_work import UnitOfWork

Result = dict[str, Any]


class EscrowEngine(TermsAdmin, BulkAdmin, SecondApproval):
    """Applies events to escrow lifecycles. Thread-safe; one per database."""

    def __init__(
        self,
        db: DBEngine,
        policy: Policy,
        clock: Clock,
        process_clock: Clock | None = None,
        deadline_retry: RetryStrategy = DEADLINE_RETRY,
        terms_name: str | None = None,
        second_approval_above: int = SECOND_APPROVAL_ABOVE,
        reads: DBEngine | None = None,
    ) -> None:
        """`clock` is the deployment's (DL2: the database server's on PostgreSQL): it
        decides every "now". `process_clock` is this host's own, read only to measure
        how far it is from `clock` (`clock_skew`). `policy` is the settings': it names
        the terms new offers get (TM1; `terms_name` names them if they are new).
        `second_approval_above`: an admin's decision moving more (major units of its
        currency) waits for a second admin (PA4). `reads`: where pages that may be a few
        seconds stale are read (a read replica: lists, search, the forecast, the
        console's overviews), never a decision; `db` if not given."""
        self.db = db
        self.reads = reads or db
        self.policy = policy
        self.terms = TermsBook(db, policy, clock, terms_name)
        self.clock = clock
        self.process_clock = process_clock or clock
        self.deadline_retry = deadline_retry  # DL3: how a failing deadline is retried
        self.second_approval_above = second_approval_above  # PA4
        self.fast = FastPath(db.dialect)
        self.decider = Decider()

    def close(self) -> None:
        """Give back the database's connections, and the clock's own if it has one."""
        close_clock = getattr(self.clock, "close", None)
        if close_clock is not None:
            close_clock()
        self.db.dispose()
        if self.reads is not self.db:
            self.reads.dispose()

    def clock_skew(self) -> timedelta:
        """How far this process's own clock is from the deployment's (positive: ahead)."""
        return skew_of(self.clock, self.process_clock)

    def work(
        self,
        conn: Connection,
        actor: Actor,
        cause: str,
        now: datetime,
        batch: Batch | None = None,
    ) -> UnitOfWork:
        """A unit of work inside the caller's transaction (the sweeper's way in)."""
        recorder = Recorder(Statements(self.fast, conn, batch), actor, cause, now, self.terms)
        return UnitOfWork(recorder, self.decider)

    @contextmanager
    def _unit(self, actor: Actor) -> Iterator[UnitOfWork]:
        self.terms.current()  # stored before the transaction, in one of its own
        with transaction(self.db, pipelined=True) as conn:
            unit = self.work(conn, actor, "request", self.clock.now())
            yield unit
            unit.flush()

    def apply(
        self,
        entity: str,
        entity_id: int,
        event: str,
        actor: Actor,
        payload: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        expected_version: int | None = None,
    ) -> Result:
        """Apply `event` to an entity as `actor`, atomically. See the module docstring."""
        access.refuse_system_role(actor)  # PA1, X10: only timers and cascades act as system
        machine = _machine(entity)
        if event not in machine.permissions:
            raise NotFound(
                f"{entity} has no event {event!r}; its events are: "
                f"{', '.join(party_events(machine))}",
                code="unknown_event",
            )
        payload = dict(payload or {})
        request = {
            "entity": entity,
            "id": entity_id,
            "event": event,
            "actor": actor.as_dict(),
            "payload": payload,
            "expected_version": expected_version,
        }
        with self._unit(actor) as unit:
            record = unit.lock_and_load(entity, entity_id)
            if idempotency_key is not None:
                replay = idempotency.replay(unit.tx, idempotency_key, request)
                if replay is not None:
                    return replay
            access.check_actor(entity, event, actor, unit.contract.values)
            if expected_version is not None and record["version"] != expected_version:
                raise VersionConflict(
                    f"{entity} {entity_id} is at version {record['version']}, "
                    f"not {expected_version}: re-read it and decide again",
                    details={"version": record["version"], "state": record["state"]},
                )
            moves = self._moves_above(unit, record, event, actor, payload)
            if moves is not None:  # PA4: it waits for a second admin
                remember = None if idempotency_key is None else (idempotency_key, request)
                return self._propose(unit, record, event, payload, moves, remember)
            step = self._move(unit, record, event, payload)
            return self._answer(unit, step, idempotency_key, request)

    def fire(
        self, conn: Connection, deadline_id: int, now: datetime, batch: Batch | None = None
    ) -> str:
        """Fire one deadline inside the caller's transaction (the sweeper's): "fired",
        "stale" or "gone". With `batch`, its append-only rows wait there for the caller.

        A deadline fires only if its entity still has the version it was scheduled for;
        otherwise the entity has moved on (a party acted first) and it is marked stale. A
        reminder (NT2) fires the same way, but writes only its history row and feed
        event; one whose timer is already due is stale (too late to remind).
        "gone": already fired or cancelled (another worker, or a party, got there first).
        """
        unit = self.work(conn, SYSTEM, "timer", now, batch)
        deadline = unit.lock_deadline(deadline_id)
        if deadline["status"] != "pending":
            return "gone"
        unit.firing(deadline)
        record = unit.load(deadline["entity"], deadline["entity_id"])
        timer = timer_of(MACHINES[record.entity], record["state"])
        reminder = reminders.parse(deadline["event"])
        event, before = reminder or (deadline["event"], timedelta(0))
        timer_due = deadline["due_at"] + before
        if (
            record["version"] != deadline["state_version"]
            or timer is None
            or timer.event != event
            or (reminder is not None and timer_due <= now)  # NT2: too late to remind
        ):
            deadlines.close(unit.tx, deadline_id, "stale", now, None)
            return "stale"
        if reminder is not None:  # NT2: tell the party who can act; nothing moves
            party, details = reminders.notice(unit.contract, record, timer, timer_due)
            step = unit.note(record, "reminder", {}, details=details, recipients=[party])
        else:
            step = self._move(unit, record, deadline["event"], {})
            unit.flush()
        deadlines.close(unit.tx, deadline_id, "fired", now, step.history_id)
        return "fired"

    @staticmethod
    def _move(unit: UnitOfWork, record: Row, event: str, payload: Mapping[str, Any]) -> Step:
        """The machine's transition and what follows it (X3: a settled contract closes)."""
        step = unit.transition(record, event, payload)
        unit.close_if_settled(step)
        return step

    def create_contract(
        self, actor: Actor, payload: Mapping[str, Any], idempotency_key: str | None = None
    ) -> Result:
        """CT2: a client offers a contract to a freelancer, with milestones if given (MS2)."""
        payload = dict(payload)
        request = {
            "entity": "contract",
            "event": "create",
            "actor": actor.as_dict(),
            "payload": payload,
        }
        access.require_client(actor)
        used = self.terms.current()
        try:
            return self._offer(actor, payload, idempotency_key, request)
        except ConflictError:
            # The terms this process had read may not be on the server it reaches now (an
            # asynchronous standby promoted without them, a restored backup): if so, they
            # are stored again and the offer made under them.
            if not self.terms.forget_if_gone(used.id):
                raise
            return self._offer(actor, payload, idempotency_key, request)

    def _offer(
        self,
        actor: Actor,
        payload: dict[str, Any],
        idempotency_key: str | None,
        request: dict[str, Any],
    ) -> Result:
        with self._unit(actor) as unit:
            if idempotency_key is not None:
                replay = idempotency.replay(unit.tx, idempotency_key, request)
                if replay is not None:
                    return replay
            step = offer_contract(unit, payload)
            return self._answer(unit, step, idempotency_key, request)

    def adjust_deadline(
        self,
        deadline_id: int,
        action: str,
        actor: Actor,
        reason: str,
        extend_by: timedelta | None = None,
    ) -> Result:
        """An admin pauses, resumes or extends a deadline, with a reason, in history."""
        access.require_admin(actor, f"{action} a deadline")
        deadline_admin.check_request(action, reason, extend_by)
        with self._unit(actor) as unit:
            unit.lock_contract_of("deadline", deadline_id)
            return deadline_admin.adjust(unit, deadline_id, action, reason, extend_by)

    def add_note(self, actor: Actor, contract_id: int, text: str) -> Result:
        """An admin's note on a contract (the dispute desk's working record): a history
        row and an event like any other, shown in the case's timeline; it changes
        nothing else."""
        access.require_admin(actor, "add a note to a contract")
        text = deadline_admin.checked_note(text)
        with self._unit(actor) as unit:
            record = unit.lock_and_load("contract", contract_id)
            step = unit.note(record, "note", {"note": text})
            return self._answer(unit, step, None, {})

    @staticmethod
    def _answer(
        unit: UnitOfWork, step: Step, key: str | None, request: Mapping[str, Any]
    ) -> Result:
        result = {
            "entity": step.entity,
            "id": step.record.id,
            "event": step.event,
            "state": step.record["state"],
            "version": step.record["version"],
            "history_id": step.history_id,
            "created": list(unit.created),
            "replayed": False,
        }
        if key is not None:
            idempotency.remember(unit.tx, key, request, result, unit.now)
        return result


def _machine(entity: str) -> type[EscrowMachine]:
    try:
        return MACHINES[entity]
    except KeyError:
        raise NotFound(
            f"unknown entity {entity!r}: use one of {', '.join(MACHINES)}",
            code="unknown_entity",
        ) from None
