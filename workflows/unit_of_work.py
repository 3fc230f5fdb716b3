"""The unit of work: one transaction's locked contract, the rows it loaded, its steps.

It locks the contract first (every entity belongs to one contract, so all work on a
contract is serialised and locks are always taken in the same order), lets the machine
decide each event, runs the event's effect, and has every step recorded (history,
deadlines, event). Changed rows are written once, at `flush`. All writes go through one
`storage.statements.Writes`; the SQL itself belongs to the table owners in `storage/`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from statemachine.exceptions import TransitionNotAllowed

from storage import deadlines, entities, history, ledger
from storage.errors import NotFound, TransitionRejected
from storage.statements import Row
from workflows.decision import Decider
from workflows.machines import MACHINES, Context, party_events_from
from workflows.payloads import only, reason
from workflows.policy import Policy
from workflows.recording import Recorder
from workflows.registry import EFFECTS
from workflows.step import Step


class UnitOfWork:
    """The work of one transaction; effects reach it as `step.unit`."""

    def __init__(self, recorder: Recorder, decider: Decider) -> None:
        self.recorder = recorder  # who acts, why and when; writes the record of each step
        self.tx = recorder.tx
        self.actor = recorder.actor
        self.now = recorder.now
        self.terms = recorder.terms
        self.decider = decider
        self.records: dict[tuple[str, int], Row] = {}
        self.created: list[dict[str, Any]] = []
        self._contract: Row | None = None
        self._prefetched = False  # this unit's contract was read with its batch

    @property
    def policy(self) -> Policy:
        """TM1: the policy of the locked contract's terms; before there is a contract (an
        offer), that of the terms new offers get."""
        if self._contract is None:
            return self.terms.current().policy
        return self.recorder.policy_of(self._contract)

    @property
    def deployment_policy(self) -> Policy:
        return self.terms.policy

    @property
    def contract(self) -> Row:
        assert self._contract is not None, "lock the contract first"
        return self._contract

    def _hold(self, row: Row) -> Row:
        self.records[(row.entity, row.id)] = row
        if row.entity == "contract":
            self._contract = row
        return row

    # locking and reading

    def lock_contract_of(self, entity: str, entity_id: int) -> Row:
        """Lock the contract that `entity` belongs to: all work on it is serialised."""
        contract = entities.lock_contract_of(self.tx, entity, entity_id)
        if contract is None:
            raise NotFound(f"{entity} {entity_id} does not exist", code=f"{entity}_not_found")
        if self.tx.settle(contract.id):  # its batched writes first, then read it again
            contract = entities.lock_contract_of(self.tx, entity, entity_id)
            assert contract is not None
        return self._hold(contract)

    def lock_and_load(self, entity: str, entity_id: int) -> Row:
        """`lock_contract_of(entity)`, then `load` the entity: one round trip when
        nothing waits in a batch (a request's transaction)."""
        if entity == "contract" or self.tx.batch is not None:
            self.lock_contract_of(entity, entity_id)
            return self.load(entity, entity_id)
        # On PostgreSQL a history id is taken too: the step's row then needs no answer.
        also = [] if self.tx.one_writer else [history.NEXT_ID]
        contract, record, more = entities.lock_contract_and_load(self.tx, entity, entity_id, *also)
        self.tx.ids["history"] = [row["id"] for row in more if row is not None]
        if contract is None:
            raise NotFound(f"{entity} {entity_id} does not exist", code=f"{entity}_not_found")
        self._hold(contract)
        if record is None or record["contract_id"] != contract.id:  # deleted meanwhile
            raise NotFound(f"{entity} {entity_id} does not exist", code=f"{entity}_not_found")
        self.records[(entity, entity_id)] = record
        return record

    def lock_deadline(self, deadline_id: int) -> dict[str, Any]:
        """Lock the contract of a deadline, then read the deadline under that lock."""
        prefetched = self._take_prefetched(deadline_id)
        if prefetched is not None:
            return prefetched
        if not self.tx.one_writer:
            self.lock_contract_of("deadline", deadline_id)
            found = deadlines.load(self.tx, deadline_id)
            assert found is not None  # the lock above found it
            return found
        # SQLite's write transaction already shuts out every other writer, so reading
        # both rows in one statement is as good as locking first (a round trip less).
        both = deadlines.load_with_contract(self.tx, deadline_id)
        if both is None:
            raise NotFound(f"deadline {deadline_id} does not exist", code="deadline_not_found")
        if self.tx.settle(both[0]["id"]):  # its batched writes first, then read again
            both = deadlines.load_with_contract(self.tx, deadline_id)
            assert both is not None
        self._hold(Row("contract", entities.TABLES["contract"], both[0]))
        return both[1]

    def _take_prefetched(self, deadline_id: int) -> dict[str, Any] | None:
        """The deadline and its contract as the sweeper read them for the whole batch
        (already locked), if this is the batch's first work on that contract."""
        batch = self.tx.batch
        if batch is None or not batch.prefetched:
            return None
        deadline = batch.prefetched.get(("deadline", deadline_id))
        if deadline is None:
            return None
        contract = batch.prefetched.pop(("contract", deadline["contract_id"]), None)
        if contract is None:  # an earlier deadline of the batch worked on it: read again
            return None
        self._prefetched = True
        self._hold(Row("contract", entities.TABLES["contract"], dict(contract)))
        return dict(deadline)

    def firing(self, deadline: Mapping[str, Any]) -> None:
        """This transaction fires `deadline` (its history names it)."""
        self.recorder.deadline = deadline

    def load(self, entity: str, entity_id: int) -> Row:
        """A row of the locked contract, loaded once per transaction."""
        key = (entity, entity_id)
        if key not in self.records:
            batch = self.tx.batch
            found = batch.prefetched.get(key) if self._prefetched and batch else None
            row = (
                Row(entity, entities.TABLES[entity], dict(found))
                if found is not None
                else entities.load(self.tx, entity, entity_id)
            )
            if row is None or row["contract_id"] != self.contract.id:
                raise NotFound(f"{entity} {entity_id} does not exist", code=f"{entity}_not_found")
            self.records[key] = row
        return self.records[key]

    # transitions

    def transition(
        self, record: Row, event: str, payload: Mapping[str, Any], parent: Step | None = None
    ) -> Step:
        """Let the machine decide `event` on `record`, then persist and run its effects."""
        entity = record.entity
        effect = EFFECTS.get((entity, event))
        only(payload, effect.takes if effect else (), f"{entity} event {event}")
        reason(payload)
        ctx = Context(entity, record.values, self.contract.values, payload, self.actor)
        from_state = record["state"]
        try:
            to_state = self.decider.decide(entity, from_state, event, ctx)
        except TransitionNotAllowed:
            # Only what a person may fire: engine moves are nobody's to ask for (PA1).
            allowed = ", ".join(party_events_from(MACHINES[entity], from_state)) or "none"
            raise TransitionRejected(
                f"{entity} {record.id} is {from_state}: {event} is not possible there "
                f"(possible: {allowed})",
                code="event_not_allowed_in_state",
                details={"state": from_state, "event": event},
            ) from None
        version = record["version"] + 1
        step = Step(
            unit=self,
            entity=entity,
            record=record,
            event=event,
            payload=payload,
            from_state=from_state,
            to_state=to_state,
            version=version,
        )
        record.set(state=to_state, version=version, updated_at=self.now)
        self._record(step, parent, effect.run if effect is not None else None)
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
        initial = MACHINES[entity].initial_state.id
        values = {
            **values,
            "state": initial,
            "version": 1,
            "created_at": self.now,
            "updated_at": self.now,
        }
        record = self._hold(entities.insert(self.tx, entity, values))
        step = Step(
            unit=self,
            entity=entity,
            record=record,
            event="create",
            payload={},
            from_state=None,
            to_state=initial,
            version=1,
            details=dict(details or {}),
        )
        self._record(step, parent)
        self.created.append({"entity": entity, "id": record.id})
        return step

    def note(
        self,
        record: Row,
        event: str,
        payload: Mapping[str, Any],
        *,
        states: tuple[str | None, str] | None = None,
        version: int | None = None,
        details: Mapping[str, Any] | None = None,
        recipients: list[str] | None = None,
    ) -> Step:
        """A step no machine decides and that schedules nothing (NT2's reminder, an admin's
        deadline action): its history row and its event, recorded like any other.
        `states` (from, to) and `version` default to the record's own."""
        from_state, to_state = states or (record["state"], record["state"])
        step = Step(
            unit=self,
            entity=record.entity,
            record=record,
            event=event,
            payload=payload,
            from_state=from_state,
            to_state=to_state,
            version=record["version"] if version is None else version,
            details=dict(details or {}),
        )
        self._record(step, None, schedules=False, recipients=recipients)
        return step

    def _record(
        self,
        step: Step,
        parent: Step | None,
        run: Callable[[Step], None] | None = None,
        *,
        schedules: bool = True,
        recipients: list[str] | None = None,
    ) -> None:
        """What every step records, in this order, whatever made it: its history row
        (PA3; effects point their ledger rows at it), then what its event does (`run`)
        and what that found out (NT1), its deadlines, its event."""
        step.history_id = self.recorder.history(step, self.contract, parent)
        if run is not None:
            run(step)
            if step.details:
                self.recorder.annotate(step)
        if schedules:
            self.recorder.reschedule(step, self.contract)
        self.recorder.publish(step, self.contract, recipients=recipients)

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

    # money (ES1, ES2): the ledger and the contract's totals move together

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
        ledger.append(
            self.tx,
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

    def flush(self) -> None:
        """Write the changed rows: now, or with the transaction's batch."""
        for record in self.records.values():
            entities.write(self.tx, record, later=True)
        batch = self.tx.batch
        if batch is not None and self._contract is not None:
            batch.touched.add(self._contract.id)
