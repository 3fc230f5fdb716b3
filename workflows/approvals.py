"""Two admins for money decisions (PA4).

An admin's event that moves more than the deployment's threshold (a dispute resolution,
RF3: the whole disputed amount moves, whatever the split) does not happen when asked: it
is stored as a proposal, checked as it would be applied, with who proposed it and why
(its history row on the entity says so). It happens only when a second, different admin
approves it: then the event runs as that admin, through the same transition as any
other, and a history row names both. The proposer cannot approve their own; any admin
may reject it, with a reason. One proposal waits per entity at a time; one approved
after its entity changed (another event, a party acting) is stale and changes nothing.
At or below the threshold one admin suffices, as before. The threshold is in the
currency's major units (10,000 means 10,000.00 USD, 10,000 JPY), not a term of any
contract: it is the platform's control.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from storage import approvals
from storage.db import transaction
from storage.errors import ConflictError, NotFound, PermissionDenied
from storage.statements import Row
from workflows import access, deadline_admin, idempotency
from workflows.actors import Actor, Role
from workflows.effects.refunds import checked_split
from workflows.engine_part import EnginePart, Result
from workflows.policy import ISO_4217, format_money
from workflows.step import Step
from workflows.unit_of_work import UnitOfWork

# PA4: the admin events that move money, and what each moves (minor units) and checks.
MONEY_DECISIONS: dict[tuple[str, str], Callable[[Row, str, Mapping[str, Any]], int]] = {
    ("refund", "resolve"): lambda refund, currency, payload: checked_split(
        refund["amount"], currency, payload
    ),
}
LISTED = 200
"""Decisions shown by a listing, newest first."""


def threshold_of(above: int, currency: str) -> int:
    """PA4: the threshold in `currency`'s minor units."""
    return int(above * 10 ** ISO_4217.get(currency, 2))


def shown(row: Mapping[str, Any]) -> dict[str, Any]:
    """A decision as the API, the CLI and the console show it (times in ISO 8601)."""
    return {
        **{k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in row.items()},
        "shown": format_money(int(row["amount"]), str(row["currency"])),
    }


class SecondApproval(EnginePart):
    """Part of `EscrowEngine`: money decisions that wait for a second admin (PA4)."""

    second_approval_above: int

    def _moves_above(
        self, unit: UnitOfWork, record: Row, event: str, actor: Actor, payload: Mapping[str, Any]
    ) -> int | None:
        """PA4: what this event moves, if it must wait for a second admin (else None).
        The check it would run applied runs now: a bad split is refused at once."""
        decide = MONEY_DECISIONS.get((record.entity, event))
        if decide is None or actor.role is not Role.ADMIN:
            return None
        currency = unit.contract["currency"]
        amount = decide(record, currency, payload)
        return amount if amount > threshold_of(self.second_approval_above, currency) else None

    def _propose(
        self,
        unit: UnitOfWork,
        record: Row,
        event: str,
        payload: Mapping[str, Any],
        amount: int,
        remember: tuple[str, Mapping[str, Any]] | None,
    ) -> Result:
        """PA4: store the decision for a second admin; the entity does not change."""
        waiting = approvals.pending_for(unit.tx.conn, record.entity, record.id)
        if waiting is not None:
            raise ConflictError(
                f"{record.entity} {record.id} already has a decision waiting for a second "
                f"admin (approval {waiting['id']}): approve or reject it first",
                code="approval_pending",
                details={"approval_id": waiting["id"]},
            )
        currency = unit.contract["currency"]
        reason = payload.get("reason")
        values = {
            "contract_id": unit.contract.id,
            "entity": record.entity,
            "entity_id": record.id,
            "event": event,
            "payload": dict(payload),
            "entity_version": record["version"],
            "amount": amount,
            "currency": currency,
            "status": "pending",
            "proposed_by": unit.actor.party,
            "proposed_at": unit.now,
            "reason": str(reason)[: deadline_admin.MAX_REASON_LENGTH] if reason else None,
        }
        # Two admins proposing at the same moment: uq_approvals_one_pending_per_entity
        # refuses the second (a concurrent change, 409).
        approval_id = approvals.create(unit.tx, values)
        note = {"approval_id": approval_id, "event": event, "moves": amount, **payload}
        step = unit.note(record, f"{event}_proposed", note)
        result = {
            "entity": record.entity,
            "id": record.id,
            "event": event,
            "state": record["state"],
            "version": record["version"],
            "history_id": step.history_id,
            "created": [],
            "replayed": False,
            "approval": {
                "id": approval_id,
                "status": "pending",
                "amount": amount,
                "currency": currency,
                "shown": format_money(amount, currency),
                "proposed_by": unit.actor.party,
            },
        }
        if remember is not None:
            idempotency.remember(unit.tx, remember[0], remember[1], result, unit.now)
        return result

    def approve_decision(self, actor: Actor, approval_id: int, reason: str | None = None) -> Result:
        """PA4: a second admin approves a proposed decision: it happens now, as theirs."""
        access.require_admin(actor, "approve a money decision")
        found = self._pending(approval_id)
        if found["entity"] == "bulk_action":  # applying it again, as the second admin
            # (BulkAdmin._second_admin_for refuses the proposer: same_admin)
            started = self.start_bulk(actor, found["entity_id"], found["reason"] or "approved")
            return {**started, "approval": shown({**found, "status": "approved",
                                                  "decided_by": actor.party})}  # fmt: skip
        try:
            with self._unit(actor) as unit:
                record = unit.lock_and_load(found["entity"], found["entity_id"])
                found = self._pending(approval_id, unit)  # again, under the entity's lock
                if found["proposed_by"] == actor.party:
                    raise PermissionDenied(
                        f"approval {approval_id} was proposed by {actor.party}: a second, "
                        "different admin must approve it",
                        code="same_admin",
                    )
                if record["version"] != found["entity_version"]:
                    raise _Stale(found, record)
                step = self._move(unit, record, found["event"], found["payload"])
                decided = {"status": "approved", "decided_by": actor.party, "decided_at": unit.now}
                approvals.decide(unit.tx.conn, approval_id, {**decided, "decision_reason": reason})
                unit.note(
                    record,
                    f"{found['event']}_approved",
                    {"approval_id": approval_id, "proposed_by": found["proposed_by"],
                     "approved_by": actor.party, **({"reason": reason} if reason else {})},
                )  # fmt: skip
                result = self._answer(unit, step, None, {})
        except _Stale as stale:
            with transaction(self.db) as conn:
                approvals.decide(conn, approval_id, {"status": "stale"})
            raise stale.error() from None
        return {**result, "approval": shown({**found, **decided, "decision_reason": reason})}

    def reject_decision(self, actor: Actor, approval_id: int, reason: str) -> Result:
        """PA4: an admin (the proposer too: a withdrawal) rejects a proposed decision;
        nothing moves, and the entity's history says who and why."""
        access.require_admin(actor, "reject a money decision")
        reason = deadline_admin.checked_reason(reason)
        found = self._pending(approval_id)
        if found["entity"] == "bulk_action":  # the preview stays; it can expire
            decided = {"status": "rejected", "decided_by": actor.party,
                       "decided_at": self.clock.now(), "decision_reason": reason}  # fmt: skip
            with transaction(self.db) as conn:
                approvals.decide(conn, approval_id, decided)
            return shown({**found, **decided})
        with self._unit(actor) as unit:
            record = unit.lock_and_load(found["entity"], found["entity_id"])
            found = self._pending(approval_id, unit)
            decided = {"status": "rejected", "decided_by": actor.party, "decided_at": unit.now}
            approvals.decide(unit.tx.conn, approval_id, {**decided, "decision_reason": reason})
            unit.note(
                record,
                f"{found['event']}_rejected",
                {"approval_id": approval_id, "proposed_by": found["proposed_by"], "reason": reason},
            )
        return shown({**found, **decided, "decision_reason": reason})

    def decisions(self, actor: Actor, status: str | None = "pending") -> list[dict[str, Any]]:
        """PA4: decisions, newest first (`status`: only those; None: all)."""
        access.require_admin(actor, "read the money decisions")
        with self.db.connect() as conn:
            return [shown(row) for row in approvals.listing(conn, status, LISTED)]

    def _pending(self, approval_id: int, unit: UnitOfWork | None = None) -> dict[str, Any]:
        if unit is None:
            with self.db.connect() as conn:
                found = approvals.load(conn, approval_id)
        else:
            found = approvals.load(unit.tx.conn, approval_id)
        if found is None:
            raise NotFound(f"approval {approval_id} does not exist", code="approval_not_found")
        if found["status"] != "pending":
            raise ConflictError(
                f"approval {approval_id} is {found['status']}"
                + (f" by {found['decided_by']}" if found["decided_by"] else "")
                + ": nothing to decide",
                code="approval_decided",
            )
        return found

    @staticmethod
    def _move(unit: UnitOfWork, record: Row, event: str, payload: Mapping[str, Any]) -> Step:
        raise NotImplementedError

    def start_bulk(self, actor: Actor, bulk_id: int, reason: str) -> Result:
        raise NotImplementedError

    @staticmethod
    def _answer(
        unit: UnitOfWork, step: Step, key: str | None, request: Mapping[str, Any]
    ) -> Result:
        raise NotImplementedError


class _Stale(Exception):
    def __init__(self, found: Mapping[str, Any], record: Row) -> None:
        self.found, self.record = found, record

    def error(self) -> ConflictError:
        entity, entity_id = self.found["entity"], self.found["entity_id"]
        return ConflictError(
            f"{entity} {entity_id} changed since approval {self.found['id']} was proposed "
            f"(version {self.found['entity_version']}, now {self.record['version']}, "
            f"{self.record['state']}): it is stale; propose again if still wanted",
            code="approval_stale",
            details={"state": self.record["state"], "version": self.record["version"]},
        )
