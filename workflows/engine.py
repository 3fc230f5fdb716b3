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

from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.engine import Engine as DBEngine

import workflows.effects  # noqa: F401  (registers what every event does)
from storage import bulk_actions, deadlines, terms_plans
from storage.db import transaction
from storage.errors import (
    ConflictError,
    EscrowflowError,
    NotFound,
    ValidationError,
    VersionConflict,
)
from storage.fastpath import FastPath
from storage.statements import Batch, Row, Statements
from workflows import access, bulk, deadline_admin, idempotency, reminders, terms_migration
from workflows.actors import SYSTEM, Actor
from workflows.clock import Clock, skew_of
from workflows.decision import Decider
from workflows.effects.contracts import offer_contract
from workflows.machines import MACHINES, EscrowMachine, party_events, timer_of
from workflows.policy import Policy
from workflows.recording import Recorder
from workflows.retry import DEADLINE_RETRY, RetryStrategy
from workflows.step import Step
from workflows.terms import TermsBook
from workflows.unit_of_work import UnitOfWork

Result = dict[str, Any]


class EscrowEngine:
    """Applies events to escrow lifecycles. Thread-safe; one per database."""

    def __init__(
        self,
        db: DBEngine,
        policy: Policy,
        clock: Clock,
        process_clock: Clock | None = None,
        deadline_retry: RetryStrategy = DEADLINE_RETRY,
        terms_name: str | None = None,
    ) -> None:
        """`clock` is the deployment's (DL2: the database server's on PostgreSQL): it
        decides every "now". `process_clock` is this host's own, read only to measure
        how far it is from `clock` (`clock_skew`). `policy` is the settings': it names
        the terms new offers get (TM1; `terms_name` names them if they are new)."""
        self.db = db
        self.policy = policy
        self.terms = TermsBook(db, policy, clock, terms_name)
        self.clock = clock
        self.process_clock = process_clock or clock
        self.deadline_retry = deadline_retry  # DL3: how a failing deadline is retried
        self.fast = FastPath(db.dialect)
        self.decider = Decider()

    def close(self) -> None:
        """Give back the database's connections, and the clock's own if it has one."""
        close_clock = getattr(self.clock, "close", None)
        if close_clock is not None:
            close_clock()
        self.db.dispose()

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

    # -- terms (TM1, TM2) -----------------------------------------------------------

    def plan_terms(self, actor: Actor, to_terms_id: int, selection: Mapping[str, Any]) -> Result:
        """TM2: store a plan moving the selected running contracts to other terms, with
        each deadline's due date before and after and the money it moves; nothing else
        changes. Admin only."""
        access.require_admin(actor, "plan a terms migration")
        criteria = terms_migration.check_selection(selection)
        self.terms.current()
        now = self.clock.now()
        with transaction(self.db) as conn:
            target = self.terms.get(conn, to_terms_id)
            computed = terms_migration.compute(conn, self.terms, target, criteria, now)
            plan = {
                "to_terms_id": target.id,
                "selection": criteria,
                "status": "planned",
                "created_at": now,
                "created_by": actor.party,
                "valid_until": now + terms_migration.PLAN_LIFETIME,
                "contracts": len(computed.contracts),
                "deadlines": len(computed.deadlines),
                "due_at_once": computed.due_at_once(now),
                "forecast": computed.forecast(),
            }
            plan_id = terms_plans.create(conn, plan, computed.contracts, computed.deadlines)
        return {"id": plan_id, **plan}

    def apply_terms_plan(
        self,
        actor: Actor,
        plan_id: int,
        reason: str,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> Result:
        """TM2: apply a stored plan exactly as it was previewed, a transaction per
        contract; refused with the difference if the contracts changed since. Resumes an
        interrupted apply; a plan applied already changes nothing."""
        access.require_admin(actor, "apply a terms migration")
        reason = deadline_admin.checked_reason(reason)
        self.terms.current()
        now = self.clock.now()
        with transaction(self.db) as conn:
            plan, planned = terms_migration.stored(conn, plan_id)
            if plan["status"] == "applied":
                return {**plan, "moved": 0}
            if plan["status"] == "planned" and now > plan["valid_until"]:  # X15
                raise ConflictError(
                    f"terms plan {plan_id} was made at {plan['created_at'].isoformat()} and "
                    "has expired: make a new plan and review it",
                    code="plan_expired",
                )
            todo = terms_plans.contracts(conn, plan_id, unapplied=True)
            target = self.terms.get(conn, plan["to_terms_id"])
            again = terms_migration.compute(
                conn,
                self.terms,
                target,
                plan["selection"],
                plan["created_at"],
                only={c["contract_id"] for c in todo} if plan["status"] == "applying" else None,
            )
            applied = {c["contract_id"] for c in planned.contracts} - {
                c["contract_id"] for c in todo
            }
            found = terms_migration.differences(planned, again, applied)
            if found:
                raise terms_migration.stale(plan_id, found)
            if plan["status"] == "planned":
                started = {"status": "applying", "reason": reason, "applied_by": actor.party}
                terms_plans.update(conn, plan_id, started)
                plan.update(started)
        rows: dict[int, list[dict[str, Any]]] = {}
        for row in planned.deadlines:
            rows.setdefault(row["contract_id"], []).append(row)

        def move(item: dict[str, Any]) -> None:
            with self._unit(actor) as unit:
                unit.lock_contract_of("contract", item["contract_id"])
                terms_migration.move_contract(
                    unit, plan, item["from_terms_id"], rows.get(item["contract_id"], [])
                )

        _each_in_parallel(move, todo, terms_migration.APPLY_THREADS, on_progress)
        finished = {"status": "applied", "applied_at": self.clock.now()}
        with transaction(self.db) as conn:
            terms_plans.update(conn, plan_id, finished)
        return {**plan, **finished, "moved": len(todo)}

    # -- bulk actions on deadlines (DL4) ----------------------------------------------

    def preview_bulk(
        self,
        actor: Actor,
        action: str,
        selection: Mapping[str, Any],
        extend_by: timedelta | None = None,
        undoes: int | None = None,
    ) -> Result:
        """DL4: store what `action` would do to the selected deadlines: counts, money
        per currency and day, every item as it is now. Nothing else changes."""
        access.require_admin(actor, f"{action} deadlines in bulk")
        extend_ms = bulk.check_action(action, extend_by)
        criteria = bulk.check_selection(selection)
        now = self.clock.now()
        with transaction(self.db) as conn:
            items = bulk.select(conn, action, criteria)
            if undoes is not None:  # only what the undone action did
                done = {
                    i["deadline_id"]
                    for i in bulk_actions.items(conn, undoes)
                    if i["result"] == "done"
                }
                items = [i for i in items if i["deadline_id"] in done]
            preview = {
                "action": action,
                "extend_ms": extend_ms,
                "selection": criteria,
                "status": "previewed",
                "created_at": now,
                "created_by": actor.party,
                "valid_until": now + bulk.PREVIEW_LIFETIME,
                "deadlines": len(items),
                "contracts": len({i["contract_id"] for i in items}),
                "money": bulk.money(items),
                "undoes": undoes,
            }
            bulk_id = bulk_actions.create(conn, preview, items)
        return {"id": bulk_id, **preview}

    def undo_bulk(self, actor: Actor, bulk_id: int) -> Result:
        """DL4: a preview of the inverse action (resume a freeze, pause a thaw) over the
        deadlines `bulk_id` acted on."""
        with self.db.connect() as conn:
            done = bulk.stored(conn, bulk_id)
        inverse = bulk.INVERSE.get(done["action"])
        if inverse is None:
            raise ValidationError(
                f"a bulk {done['action']} cannot be undone by another: only pauses and "
                "resumes have an inverse",
                code="not_undoable",
            )
        return self.preview_bulk(actor, inverse, done["selection"], undoes=bulk_id)

    def apply_bulk(
        self,
        actor: Actor,
        bulk_id: int,
        reason: str,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> Result:
        """DL4: apply a preview by its id, each deadline in its own transaction, its
        result kept; resumes an interrupted apply, and a finished one does nothing."""
        access.require_admin(actor, "apply a bulk action on deadlines")
        reason = deadline_admin.checked_reason(reason)
        now = self.clock.now()
        with transaction(self.db) as conn:
            found = bulk.stored(conn, bulk_id)
            if found["status"] == "done":
                return {**found, "applied": 0, "results": bulk_actions.results(conn, bulk_id)}
            if found["status"] == "previewed" and now > found["valid_until"]:
                raise ConflictError(
                    f"bulk action {bulk_id} was previewed at "
                    f"{found['created_at'].isoformat()} and has expired: preview again",
                    code="preview_expired",
                )
            todo = bulk_actions.items(conn, bulk_id, unfinished=True)
            if found["status"] == "previewed" and found["undoes"] is None:
                again = bulk.select(conn, found["action"], found["selection"])
                previewed = bulk_actions.items(conn, bulk_id)
                added = bulk.differences(previewed, again)["added"]
                if added:
                    raise bulk.stale(bulk_id, added)
            started = {"status": "running", "reason": reason, "applied_by": actor.party}
            bulk_actions.update(conn, bulk_id, started)
        extend_by = (
            timedelta(milliseconds=found["extend_ms"]) if found["extend_ms"] is not None else None
        )

        def one(item: dict[str, Any]) -> None:
            try:
                with self._unit(actor) as unit:
                    unit.lock_contract_of("deadline", item["deadline_id"])
                    moved = deadline_admin.moved_on(unit, item)
                    if moved is None:
                        deadline_admin.adjust(
                            unit, item["deadline_id"], found["action"], reason, extend_by,
                            bulk_id=bulk_id,
                        )  # fmt: skip
                    bulk_actions.record_result(
                        unit.tx, bulk_id, item["deadline_id"],
                        "done" if moved is None else "skipped", moved, unit.now,
                    )  # fmt: skip
            except EscrowflowError as error:  # refused alone: the others go on
                with transaction(self.db) as conn:
                    tx = Statements(self.fast, conn)
                    bulk_actions.record_result(
                        tx, bulk_id, item["deadline_id"], "failed", error.message[:500],
                        self.clock.now(),
                    )  # fmt: skip

        _each_in_parallel(one, todo, terms_migration.APPLY_THREADS, on_progress)
        finished = {"status": "done", "applied_at": self.clock.now()}
        with transaction(self.db) as conn:
            bulk_actions.update(conn, bulk_id, finished)
            results = bulk_actions.results(conn, bulk_id)
        return {**found, **finished, "applied": len(todo), "results": results}

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


def _each_in_parallel(
    work: Callable[[Any], None],
    items: list[Any],
    threads: int,
    on_progress: Callable[[int, int], None] | None,
) -> None:
    """`work(item)` for every item, on `threads` threads, each item its own transaction.
    The first error (or one raised by `on_progress`, called here as items finish) stops
    it: items not started are left, those started finish."""
    if not items:
        return
    with ThreadPoolExecutor(max_workers=min(threads, len(items))) as pool:
        futures = [pool.submit(work, item) for item in items]
        try:
            for done, future in enumerate(as_completed(futures), 1):
                future.result()
                if on_progress is not None:
                    on_progress(done, len(items))
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _machine(entity: str) -> type[EscrowMachine]:
    try:
        return MACHINES[entity]
    except KeyError:
        raise NotFound(
            f"unknown entity {entity!r}: use one of {', '.join(MACHINES)}",
            code="unknown_entity",
        ) from None
