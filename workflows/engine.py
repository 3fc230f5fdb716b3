"""The engine: applies one event to one entity in one transaction.

`Engine.apply()` follows design.md: lock the contract row (every entity belongs to one
contract, so all work on a contract is serialised and lock order is always the same),
honour the idempotency key, check role (PA1), membership (PA2) and expected version,
let the machine decide, then write in the same transaction the new state and version,
a history row, ledger entries, deadlines and an outbox event. Follow-on moves of other
entities ("cascades", e.g. a submission cancels the pending change request, CR5) run
through the same path inside the same transaction and record what caused them.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.engine import Engine as DBEngine
from statemachine.exceptions import TransitionNotAllowed

from storage import models
from storage.db import is_postgresql, transaction
from storage.errors import (
    IdempotencyConflict,
    NotFound,
    PermissionDenied,
    TransitionRejected,
    ValidationError,
    VersionConflict,
)
from storage.fastpath import FastPath, Prepared, insert_statement, update_statement, values_of
from workflows.actors import SYSTEM, Actor, Role, refuse_system_role
from workflows.clock import Clock
from workflows.machines import (
    MACHINES,
    Context,
    EscrowMachine,
    party_events,
    party_events_from,
    timer_of,
    unguarded_transitions,
)
from workflows.payloads import only, reason
from workflows.policy import Policy

Result = dict[str, Any]

if TYPE_CHECKING:
    from workflows.deadlines import SweepReport

_contracts = models.CONTRACTS
_history = models.HISTORY
_ledger = models.LEDGER
_deadlines = models.DEADLINES
_outbox = models.OUTBOX
_idempotency = models.IDEMPOTENCY


# Statements built once: values travel as parameters, so SQLAlchemy compiles each
# statement once and reuses it (inline literals would cost a cache key per call).
def _lock_contract_of(table: sa.Table | None) -> tuple[sa.Select[Any], sa.Select[Any]]:
    """Select (and on PostgreSQL lock) the contract of an entity row, in one statement."""
    if table is None:
        key: Any = sa.bindparam("pk")
    else:
        key = sa.select(table.c.contract_id).where(table.c.id == sa.bindparam("pk"))
        key = key.scalar_subquery()
    query = sa.select(_contracts).where(_contracts.c.id == key)
    return query, query.with_for_update(of=_contracts)


_LOCK_CONTRACT = {
    name: _lock_contract_of(None if name == "contract" else table)
    for name, table in {**models.TABLES, "deadline": _deadlines}.items()
}
_LOAD = {
    name: sa.select(table).where(table.c.id == sa.bindparam("pk"))
    for name, table in models.TABLES.items()
}
_PENDING_OF_ENTITY = sa.and_(
    _deadlines.c.entity == sa.bindparam("d_entity"),
    _deadlines.c.entity_id == sa.bindparam("d_entity_id"),
    _deadlines.c.status == "pending",
    _deadlines.c.id != sa.bindparam("d_firing"),
)
_LOAD_DEADLINE = sa.select(_deadlines).where(_deadlines.c.id == sa.bindparam("pk"))
_CONTRACT_AND_DEADLINE = (
    sa.select(_contracts, *(c.label(f"deadline__{c.name}") for c in _deadlines.c))
    .join_from(_deadlines, _contracts, _contracts.c.id == _deadlines.c.contract_id)
    .where(_deadlines.c.id == sa.bindparam("pk"))
)
_CLOSE_DEADLINE = (
    _deadlines.update()
    .where(_deadlines.c.id == sa.bindparam("pk"))
    .values(
        status=sa.bindparam("status"),
        closed_at=sa.bindparam("now"),
        history_id=sa.bindparam("history_id"),
        claimed_by=None,
        claim_expires_at=None,
    )
)
_CANCEL_DEADLINES = (
    _deadlines.update()
    .where(_PENDING_OF_ENTITY)
    .values(status="cancelled", closed_at=sa.bindparam("d_now"))
)
_CARRY_DEADLINES = (
    _deadlines.update().where(_PENDING_OF_ENTITY).values(state_version=sa.bindparam("d_version"))
)


# -- what an event does besides changing state ---------------------------------------


@dataclass(frozen=True)
class Effect:
    run: Callable[[Step], None]
    takes: tuple[str, ...]


EFFECTS: dict[tuple[str, str], Effect] = {}
"""(entity, event) -> the effect that runs after the machine accepted the event."""


def effect(
    entity: str, event: str, *, takes: tuple[str, ...] = ()
) -> Callable[[Callable[[Step], None]], Callable[[Step], None]]:
    """Register what `event` on `entity` does, and the payload fields it takes."""

    def register(run: Callable[[Step], None]) -> Callable[[Step], None]:
        machine = MACHINES[entity]
        if event not in machine.permissions:
            raise TypeError(f"effect for unknown event {entity}.{event}")
        EFFECTS[(entity, event)] = Effect(run, takes)
        return run

    return register


# -- rows ---------------------------------------------------------------------------


class Record:
    """A row loaded for update: its values, and the columns changed since loading."""

    __slots__ = ("changed", "entity", "table", "values")

    def __init__(self, entity: str, table: sa.Table, values: dict[str, Any]) -> None:
        self.entity = entity
        self.table = table
        self.values = values
        self.changed: dict[str, Any] = {}

    def __getitem__(self, column: str) -> Any:
        return self.values[column]

    @property
    def id(self) -> int:
        return int(self.values["id"])

    def set(self, **columns: Any) -> None:
        self.values.update(columns)
        self.changed.update(columns)

    def add(self, **amounts: int) -> None:
        """Add to integer columns (money totals)."""
        self.set(**{column: self.values[column] + delta for column, delta in amounts.items()})


@dataclass
class Step:
    """One transition being applied: what effects read and write."""

    unit: Unit
    entity: str
    record: Record
    event: str
    payload: Mapping[str, Any]
    from_state: str | None
    to_state: str
    version: int
    history_id: int
    # What changed, for people (NT1): fields before and after, a proposal's items. Goes
    # into the history row and the event's data.
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def contract(self) -> Record:
        return self.unit.contract

    @property
    def policy(self) -> Policy:
        return self.unit.engine.policy


class _Carrier:
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


class _Machines(threading.local):
    """One bound machine per lifecycle per thread: building one costs far more than
    sending it an event, and a machine is not safe to share between threads."""

    def __init__(self) -> None:
        self.bound: dict[str, tuple[EscrowMachine, _Carrier]] = {}

    def decide(self, entity: str, state: str, event: str, ctx: Context) -> str:
        target = _UNGUARDED[entity].get((state, event))
        if target is not None:
            return target
        bound = self.bound.get(entity)
        if bound is not None and bound[0].is_terminated and not _restart(bound[0]):
            bound = None
        if bound is None:
            carrier = _Carrier()
            bound = (MACHINES[entity](model=carrier, state_field="state"), carrier)
            self.bound[entity] = bound
        machine, carrier = bound
        carrier.state = state
        machine.send(event, ctx=ctx)
        assert carrier.state is not None
        return carrier.state


# -- one transaction ----------------------------------------------------------------


class Appends:
    """Writes nobody reads back before commit, kept to be written together.

    Ledger entries, outbox events and the closing of fired deadlines are only ever
    appended; a contract's and its entities' new states are read again only by later
    work on the same contract. A sweep fires hundreds of deadlines in one transaction;
    writing each kind once, with the driver's executemany, saves a round trip per row.
    The caller writes them before touching a contract again (`touched`) and at the end.
    """

    def __init__(self) -> None:
        self._rows: dict[Any, tuple[Prepared, list[Mapping[str, Any]]]] = {}
        self.touched: set[int] = set()  # contracts with writes waiting here

    def add(self, key: Any, prepared: Prepared, values: Mapping[str, Any]) -> None:
        self._rows.setdefault(key, (prepared, []))[1].append(values)

    def write(self, fast: FastPath, conn: Connection) -> None:
        for prepared, rows in self._rows.values():
            fast.execute_many(conn, prepared, rows)
        self._rows.clear()
        self.touched.clear()


class Unit:
    """The work of one transaction: the locked contract, the rows loaded, the writes."""

    def __init__(
        self,
        engine: Engine,
        conn: Connection,
        actor: Actor,
        cause: str,
        now: datetime,
        deadline: Mapping[str, Any] | None = None,
        appends: Appends | None = None,
    ) -> None:
        self.engine = engine
        self.conn = conn
        self.actor = actor
        self.cause = cause
        self.now = now
        self.deadline = deadline
        # Where append-only rows wait to be written together (None: write at once).
        self.appends = appends
        self.records: dict[tuple[str, int], Record] = {}
        self.created: list[dict[str, Any]] = []
        self._contract: Record | None = None

    @property
    def contract(self) -> Record:
        assert self._contract is not None, "lock the contract first"
        return self._contract

    # reading and locking

    def lock_contract_of(self, entity: str, entity_id: int) -> Record:
        """Lock the contract that `entity` belongs to: all work on it is serialised."""
        plain, for_update = _LOCK_CONTRACT[entity]
        query = for_update if is_postgresql(self.conn) else plain
        fast = self.engine.fast
        row = fast.fetch_one(
            self.conn, fast.prepare(("lock", entity), _same, query), {"pk": entity_id}
        )
        if row is None:
            raise NotFound(f"{entity} {entity_id} does not exist", code=f"{entity}_not_found")
        self._contract = Record("contract", _contracts, row)
        self.records[("contract", self._contract.id)] = self._contract
        return self._contract

    def lock_deadline(self, deadline_id: int) -> dict[str, Any]:
        """Lock the contract of a deadline, then read the deadline under that lock."""
        fast = self.engine.fast
        if is_postgresql(self.conn):
            self.lock_contract_of("deadline", deadline_id)
            found = fast.fetch_one(
                self.conn, fast.prepare("deadline", _same, _LOAD_DEADLINE), {"pk": deadline_id}
            )
            assert found is not None  # the lock above found it
            return found
        # SQLite's write transaction already shuts out every other writer, so reading
        # both rows in one statement is as good as locking first (a round trip less).
        row = fast.fetch_row(
            self.conn,
            fast.prepare("contract+deadline", _same, _CONTRACT_AND_DEADLINE),
            {"pk": deadline_id},
        )
        if row is None:
            raise NotFound(f"deadline {deadline_id} does not exist", code="deadline_not_found")
        cut = len(_contracts.c)
        self._contract = Record(
            "contract", _contracts, dict(zip(_contracts.c.keys(), row[:cut], strict=True))
        )
        self.records[("contract", self._contract.id)] = self._contract
        return dict(zip(_deadlines.c.keys(), row[cut:], strict=True))

    def load(self, entity: str, entity_id: int) -> Record:
        key = (entity, entity_id)
        if key not in self.records:
            fast = self.engine.fast
            found = fast.fetch_one(
                self.conn, fast.prepare(("load", entity), _same, _LOAD[entity]), {"pk": entity_id}
            )
            if found is None or found["contract_id"] != self.contract.id:
                raise NotFound(f"{entity} {entity_id} does not exist", code=f"{entity}_not_found")
            self.records[key] = Record(entity, models.TABLES[entity], found)
        return self.records[key]

    def insert(self, table: sa.Table, values: Mapping[str, Any]) -> int:
        """Insert a row; its new id."""
        fast = self.engine.fast
        columns = tuple(values)
        prepared = fast.prepare(
            ("insert", table.name, columns),
            insert_statement,
            table,
            columns,
            fast.dialect,
        )
        return fast.insert(self.conn, prepared, values_of(values))

    def append(self, table: sa.Table, values: Mapping[str, Any]) -> None:
        """Insert a row whose id nobody needs: now, or with the unit's appends."""
        if self.appends is None:
            self.insert(table, values)
            return
        fast = self.engine.fast
        columns = tuple(values)
        key = ("append", table.name, columns)
        prepared = fast.prepare(key, insert_statement, table, columns, fast.dialect, False)
        self.appends.add(key, prepared, values_of(values))

    def execute_later(self, statement: sa.Update, values: Mapping[str, Any]) -> None:
        """Run an update nothing in this unit reads back: now, or with the appends."""
        fast = self.engine.fast
        prepared = fast.prepare(statement, _same, statement)
        if self.appends is None:
            fast.execute(self.conn, prepared, values)
        else:
            self.appends.add(statement, prepared, values)

    # transitions

    def transition(
        self,
        record: Record,
        event: str,
        payload: Mapping[str, Any],
        parent: Step | None = None,
    ) -> Step:
        """Let the machine decide `event` on `record`, then persist and run its effects."""
        entity = record.entity
        effect_ = EFFECTS.get((entity, event))
        only(payload, effect_.takes if effect_ else (), f"{entity} event {event}")
        reason(payload)
        ctx = Context(entity, record.values, self.contract.values, payload, self.actor)
        from_state = record["state"]
        try:
            to_state = self.engine._machines.decide(entity, from_state, event, ctx)
        except TransitionNotAllowed:
            # Only what a person may fire: engine moves are nobody's to ask for.
            allowed = ", ".join(party_events_from(MACHINES[entity], from_state)) or "none"
            raise TransitionRejected(
                f"{entity} {record.id} is {from_state}: {event} is not possible there "
                f"(possible: {allowed})",
                code="event_not_allowed_in_state",
                details={"state": from_state, "event": event},
            ) from None
        version = record["version"] + 1
        step = Step(self, entity, record, event, payload, from_state, to_state, version, 0)
        step.history_id = self._history(step, parent)
        record.set(state=to_state, version=version, updated_at=self.now)
        if effect_ is not None:
            effect_.run(step)
        if step.details:
            self._annotate_history(step)
        self._reschedule(step)
        self._publish(step)
        return step

    def cascade(
        self, entity: str, entity_id: int, event: str, parent: Step, **payload: Any
    ) -> Step:
        """Move another entity of the contract because of `parent` (same actor and cause)."""
        return self.transition(self.load(entity, entity_id), event, payload, parent)

    def create(
        self,
        entity: str,
        values: Mapping[str, Any],
        parent: Step | None,
        details: Mapping[str, Any] | None = None,
    ) -> Step:
        """Create an entity in its machine's initial state, as a transition from nothing;
        `details` say what it holds for people (NT1), in its history row and event."""
        machine = MACHINES[entity]
        initial = machine.initial_state.id
        row = {
            **values,
            "state": initial,
            "version": 1,
            "created_at": self.now,
            "updated_at": self.now,
        }
        table = models.TABLES[entity]
        row["id"] = self.insert(table, row)
        record = Record(entity, table, row)
        self.records[(entity, record.id)] = record
        if entity == "contract":
            self._contract = record
        step = Step(self, entity, record, "create", {}, None, initial, 1, 0, dict(details or {}))
        step.history_id = self._history(step, parent)
        self._reschedule(step)
        self._publish(step)
        self.created.append({"entity": entity, "id": record.id})
        return step

    # money (ES1, ES2)

    def deposit(self, step: Step, amount: int, milestone_id: int | None) -> None:
        if amount > 0:
            self._ledger(step, "deposit", amount, milestone_id, None)
            self.contract.add(deposited=amount, held=amount)

    def pay_out(
        self, step: Step, kind: str, amount: int, milestone_id: int | None, refund_id: int | None
    ) -> None:
        """Release to the freelancer or refund to the client money that is held."""
        if amount > 0:
            self._ledger(step, kind, amount, milestone_id, refund_id)
            totals = {"release": "released", "refund": "refunded"}
            self.contract.add(**{totals[kind]: amount, "held": -amount})

    def _ledger(
        self, step: Step, kind: str, amount: int, milestone_id: int | None, refund_id: int | None
    ) -> None:
        self.append(
            _ledger,
            {
                "contract_id": self.contract.id,
                "milestone_id": milestone_id,
                "refund_id": refund_id,
                "history_id": step.history_id,
                "kind": kind,
                "amount": amount,
                "currency": self.contract["currency"],
                "at": self.now,
            },
        )

    # what every transition writes

    def _history(self, step: Step, parent: Step | None) -> int:
        timer = self.deadline if parent is None and self.cause == "timer" else None
        payload = _jsonable({**step.payload, **step.details})
        return self.insert(
            _history,
            {
                "contract_id": self.contract.id,
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
                "payload": payload,
            },
        )

    def _annotate_history(self, step: Step) -> None:
        """Add what the effect found out (fields before and after) to the step's history."""
        fast = self.engine.fast
        key = ("update", _history.name, ("payload",))
        prepared = fast.prepare(key, update_statement, _history, ("payload",))
        payload = _jsonable({**step.payload, **step.details})
        values = {"pk": step.history_id, **values_of({"payload": payload})}
        fast.execute(self.conn, prepared, values)

    def _reschedule(self, step: Step) -> None:
        """Keep deadlines in step with the state: a timer runs only while its state lasts."""
        machine = MACHINES[step.entity]
        left = timer_of(machine, step.from_state) if step.from_state else None
        entered = timer_of(machine, step.to_state)
        if step.from_state == step.to_state and entered is not None:
            if step.event in entered.restart_on:
                self._cancel_deadlines(step)
                self._schedule(step, entered.policy, entered.event)
            else:
                # Keep the running deadline, and the version it may fire on.
                self._execute(
                    _CARRY_DEADLINES, {**self._deadlines_of(step), "d_version": step.version}
                )
            return
        firing_this = self.deadline is not None and (
            self.deadline["entity"],
            self.deadline["entity_id"],
        ) == (step.entity, step.record.id)
        # An entity has at most one pending deadline (one timer per state, a unique index
        # per event): when it is the one firing, there is nothing else to cancel.
        if left is not None and not firing_this:
            self._cancel_deadlines(step)
        if entered is not None:
            self._schedule(step, entered.policy, entered.event)

    def _deadlines_of(self, step: Step) -> dict[str, Any]:
        """Parameters naming the pending deadlines of `step`'s entity (but the firing one)."""
        return {
            "d_entity": step.entity,
            "d_entity_id": step.record.id,
            "d_firing": self.deadline["id"] if self.deadline is not None else 0,
        }

    def _cancel_deadlines(self, step: Step) -> None:
        self._execute(_CANCEL_DEADLINES, {**self._deadlines_of(step), "d_now": self.now})

    def _execute(self, statement: sa.Update, values: Mapping[str, Any]) -> None:
        fast = self.engine.fast
        fast.execute(self.conn, fast.prepare(statement, _same, statement), values)

    def _schedule(self, step: Step, policy: str, event: str) -> None:
        self.insert(
            _deadlines,
            {
                "contract_id": self.contract.id,
                "entity": step.entity,
                "entity_id": step.record.id,
                "event": event,
                "due_at": self.now + self.engine.policy.duration(policy),
                "state_version": step.version,
                "status": "pending",
                "created_at": self.now,
            },
        )

    def _publish(self, step: Step) -> None:
        contract = self.contract
        parties = {Role.CLIENT: contract["freelancer_id"], Role.FREELANCER: contract["client_id"]}
        counterparty = parties.get(self.actor.role)
        recipients = (
            [counterparty] if counterparty else [contract["client_id"], contract["freelancer_id"]]
        )
        self.append(
            _outbox,
            {
                "event_id": str(uuid.uuid4()),
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
                    **_money_snapshot(step.record),
                    **(_jsonable(step.details) if step.details else {}),
                },
            },
        )

    def close_if_settled(self, step: Step) -> None:
        """X3: an ended contract that holds nothing and has nothing open is closed."""
        contract = self.contract
        if (
            contract["state"] == "ended"
            and contract["held"] == 0
            and contract["active_milestone_id"] is None
            and contract["open_refund_id"] is None
        ):
            self.transition(contract, "close", {}, step)

    def flush(self) -> None:
        """Write the changed rows: now, or with the unit's appends."""
        fast = self.engine.fast
        for record in self.records.values():
            if record.changed:
                table, columns = record.table, tuple(record.changed)
                key = ("update", table.name, columns)
                prepared = fast.prepare(key, update_statement, table, columns)
                values = {"pk": record.id, **values_of(record.changed)}
                if self.appends is None:
                    fast.execute(self.conn, prepared, values)
                else:
                    self.appends.add(key, prepared, values)
                record.changed = {}
        if self.appends is not None and self._contract is not None:
            self.appends.touched.add(self._contract.id)


def _same(statement: sa.ClauseElement) -> sa.ClauseElement:
    return statement


def _jsonable(values: Mapping[str, Any]) -> dict[str, Any]:
    """Dates and the like as text: history and events are JSON."""
    return json.loads(json.dumps(values, default=str)) if values else {}


def _money_snapshot(record: Record) -> dict[str, Any]:
    columns = {
        "contract": ("held", "deposited", "released", "refunded", "credit", "currency"),
        "milestone": ("amount", "escrow", "released_amount"),
        "refund": ("amount", "to_client", "to_freelancer"),
        "change_request": ("amount",),
    }.get(record.entity, ())
    return {column: record.values.get(column) for column in columns}


def fingerprint(request: Mapping[str, Any]) -> str:
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _check_actor(unit: Unit, entity: str, event: str, actor: Actor) -> None:
    roles = MACHINES[entity].permissions[event]
    if actor.role not in roles:
        allowed = ", ".join(sorted(r.value for r in roles))
        raise PermissionDenied(
            f"{actor.role.value} may not {event} a {entity}; only {allowed} may",
            code="role_not_allowed",
            details={"role": actor.role.value, "allowed": sorted(r.value for r in roles)},
        )
    contract = unit.contract
    member = {Role.CLIENT: contract["client_id"], Role.FREELANCER: contract["freelancer_id"]}
    if actor.role in member and member[actor.role] != actor.party:
        raise PermissionDenied(
            f"{actor.party} is not the {actor.role.value} of contract {contract.id}",
            code="not_a_party",
            details={"party": actor.party, "contract_id": contract.id},
        )


class Engine:
    """Applies events to escrow lifecycles. Thread-safe; one per database."""

    def __init__(self, db: DBEngine, policy: Policy, clock: Clock) -> None:
        # What events do besides changing state is registered by importing the effects;
        # every path (requests, timers) needs them, so an engine never exists without.
        import workflows.effects  # noqa: F401

        self.db = db
        self.policy = policy
        self.clock = clock
        self.fast = FastPath(db.dialect)
        self._machines = _Machines()

    @contextmanager
    def _unit(
        self, actor: Actor, cause: str = "request", deadline: Mapping[str, Any] | None = None
    ) -> Iterator[Unit]:
        with transaction(self.db) as conn:
            unit = Unit(self, conn, actor, cause, self.clock.now(), deadline)
            yield unit
            unit.flush()

    # -- writing ------------------------------------------------------------------

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
        refuse_system_role(actor)  # PA1, X10: only timers and cascades act as system
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
            unit.lock_contract_of(entity, entity_id)
            if idempotency_key is not None:
                replay = self._replay(unit.conn, idempotency_key, request)
                if replay is not None:
                    return replay
            record = unit.load(entity, entity_id)
            _check_actor(unit, entity, event, actor)
            if expected_version is not None and record["version"] != expected_version:
                raise VersionConflict(
                    f"{entity} {entity_id} is at version {record['version']}, "
                    f"not {expected_version}: re-read it and decide again",
                    details={"version": record["version"], "state": record["state"]},
                )
            step = unit.transition(record, event, payload)
            unit.close_if_settled(step)
            result = self._result(unit, step)
            if idempotency_key is not None:
                self._remember(unit, idempotency_key, request, result)
            return result

    def create_contract(
        self, actor: Actor, payload: Mapping[str, Any], idempotency_key: str | None = None
    ) -> Result:
        """CT2: a client offers a contract to a freelancer, with milestones if given (MS2)."""
        from workflows import effects

        payload = dict(payload)
        request = {
            "entity": "contract",
            "event": "create",
            "actor": actor.as_dict(),
            "payload": payload,
        }
        if actor.role is not Role.CLIENT:
            raise PermissionDenied(
                f"only a client offers contracts, not a {actor.role.value}",
                code="role_not_allowed",
            )
        with self._unit(actor) as unit:
            if idempotency_key is not None:
                replay = self._replay(unit.conn, idempotency_key, request)
                if replay is not None:
                    return replay
            step = effects.offer_contract(unit, payload)
            result = self._result(unit, step)
            if idempotency_key is not None:
                self._remember(unit, idempotency_key, request, result)
            return result

    def fire_due_deadlines(self, now: datetime | None = None, limit: int = 500) -> SweepReport:
        """Fire every deadline due by `now`, oldest first, in batches (what the daemon
        does on a schedule; see workflows.deadlines)."""
        from workflows.deadlines import Sweeper

        return Sweeper(self, worker_id="fire-due", batch_size=limit).sweep(now)

    def fire_deadline(self, deadline_id: int, now: datetime | None = None) -> str:
        """Fire one deadline in its own transaction: "fired", "stale" or "gone"."""
        with transaction(self.db) as conn:
            return self.fire_deadline_in(conn, deadline_id, now)

    def fire_deadline_in(
        self,
        conn: Connection,
        deadline_id: int,
        now: datetime | None = None,
        appends: Appends | None = None,
    ) -> str:
        """Fire one deadline inside the caller's transaction.

        With `appends`, its append-only rows wait there for the caller to write.

        A deadline fires only if its entity still has the version it was scheduled for;
        otherwise the entity has moved on (a party acted first) and it is marked stale.
        "gone": already fired or cancelled (another worker, or a party, got there first).
        """
        unit = Unit(self, conn, SYSTEM, "timer", now or self.clock.now(), appends=appends)
        deadline = unit.lock_deadline(deadline_id)
        if deadline["status"] != "pending":
            return "gone"
        unit.deadline = deadline
        record = unit.load(deadline["entity"], deadline["entity_id"])
        timer = timer_of(MACHINES[record.entity], record["state"])
        if (
            record["version"] != deadline["state_version"]
            or timer is None
            or timer.event != deadline["event"]
        ):
            self._close_deadline(unit, deadline_id, "stale", None)
            return "stale"
        step = unit.transition(record, deadline["event"], {})
        unit.close_if_settled(step)
        unit.flush()
        self._close_deadline(unit, deadline_id, "fired", step.history_id)
        return "fired"

    def adjust_deadline(
        self,
        deadline_id: int,
        action: str,
        actor: Actor,
        reason: str,
        extend_by: timedelta | None = None,
    ) -> Result:
        """An admin pauses, resumes or extends a deadline, with a reason, in history."""
        if actor.role is not Role.ADMIN:
            raise PermissionDenied(
                f"only the dispute team (admin) may {action} a deadline, not a {actor.role.value}",
                code="role_not_allowed",
            )
        if action not in ("pause", "resume", "extend"):
            raise ValidationError(
                f"unknown deadline action {action!r}: pause, resume or extend",
                code="unknown_event",
            )
        if not reason or not reason.strip():
            raise ValidationError(
                "give a reason: it is recorded in the history",
                code="field_required",
                details={"field": "reason"},
            )
        if action == "extend" and (extend_by is None or extend_by <= timedelta(0)):
            raise ValidationError(
                "extend needs a positive duration, e.g. --by P2D", code="invalid_duration"
            )
        with self._unit(actor) as unit:
            unit.lock_contract_of("deadline", deadline_id)
            row = dict(
                unit.conn.execute(sa.select(_deadlines).where(_deadlines.c.id == deadline_id))
                .mappings()
                .one()
            )
            status = "paused" if row["paused"] else "pending"
            refused = (
                row["status"] != "pending"
                or (action == "pause" and row["paused"])
                or (action == "resume" and not row["paused"])
            )
            if refused:
                shown = row["status"] if row["status"] != "pending" else status
                done = {"pause": "paused", "resume": "resumed", "extend": "extended"}[action]
                raise TransitionRejected(
                    f"deadline {deadline_id} is {shown}: it cannot be {done}",
                    code="event_not_allowed_in_state",
                )
            changes: dict[str, Any] = {}
            if action == "extend":
                assert extend_by is not None
                changes["due_at"] = row["due_at"] + extend_by
            else:
                changes["paused"] = action == "pause"
            unit.conn.execute(
                _deadlines.update().where(_deadlines.c.id == deadline_id).values(**changes)
            )
            version = (
                1
                + unit.conn.execute(
                    sa.select(sa.func.count()).where(
                        _history.c.entity == "deadline", _history.c.entity_id == deadline_id
                    )
                ).scalar_one()
            )
            record = Record("deadline", _deadlines, {**row, **changes})
            new_status = "paused" if changes.get("paused", row["paused"]) else "pending"
            payload = {
                "reason": reason.strip(),
                "event": row["event"],
                "entity": row["entity"],
                "entity_id": row["entity_id"],
                "due_at": str(changes.get("due_at", row["due_at"])),
            }
            step = Step(unit, "deadline", record, action, payload, status, new_status, version, 0)
            step.history_id = unit._history(step, None)
            unit._publish(step)
            return {
                "entity": "deadline",
                "id": deadline_id,
                "event": action,
                "state": new_status,
                "version": version,
                "history_id": step.history_id,
                "due_at": changes.get("due_at", row["due_at"]).isoformat(),
                "created": [],
                "replayed": False,
            }

    def _close_deadline(
        self, unit: Unit, deadline_id: int, status: str, history_id: int | None
    ) -> None:
        unit.execute_later(
            _CLOSE_DEADLINE,
            {"pk": deadline_id, "status": status, "now": unit.now, "history_id": history_id},
        )

    # -- helpers ------------------------------------------------------------------

    @staticmethod
    def _replay(conn: Connection, key: str, request: Mapping[str, Any]) -> Result | None:
        """The stored result of a request already made with this key, if it was this one."""
        if not key or len(key) > 200:
            raise ValidationError(
                "Idempotency-Key must be 1 to 200 characters", code="invalid_idempotency_key"
            )
        stored = conn.execute(
            sa.select(_idempotency.c.fingerprint, _idempotency.c.result).where(
                _idempotency.c.key == key
            )
        ).first()
        if stored is None:
            return None
        if stored.fingerprint != fingerprint(request):
            raise IdempotencyConflict(
                f"Idempotency-Key {key!r} was already used for a different request: "
                "use a new key for a new request"
            )
        return {**stored.result, "replayed": True}

    @staticmethod
    def _remember(unit: Unit, key: str, request: Mapping[str, Any], result: Result) -> None:
        unit.conn.execute(
            _idempotency.insert().values(
                key=key, fingerprint=fingerprint(request), result=result, created_at=unit.now
            )
        )

    @staticmethod
    def _result(unit: Unit, step: Step) -> Result:
        return {
            "entity": step.entity,
            "id": step.record.id,
            "event": step.event,
            "state": step.record["state"],
            "version": step.record["version"],
            "history_id": step.history_id,
            "created": list(unit.created),
            "replayed": False,
        }


def _machine(entity: str) -> type[EscrowMachine]:
    try:
        return MACHINES[entity]
    except KeyError:
        raise NotFound(
            f"unknown entity {entity!r}: use one of {', '.join(MACHINES)}",
            code="unknown_entity",
        ) from None
