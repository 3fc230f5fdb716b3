"""The engine's terms operations (TM2): plan a migration, apply it by its id."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from storage import terms_plans
from storage.db import transaction
from storage.errors import ConflictError
from workflows import access, deadline_admin, terms_migration
from workflows.actors import Actor
from workflows.engine_part import EnginePart, Result
from workflows.parallel import each_in_parallel


class TermsAdmin(EnginePart):
    """Part of `EscrowEngine`: moving running contracts to other terms."""

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

        each_in_parallel(move, todo, terms_migration.APPLY_THREADS, on_progress)
        finished = {"status": "applied", "applied_at": self.clock.now()}
        with transaction(self.db) as conn:
            terms_plans.update(conn, plan_id, finished)
        return {**plan, **finished, "moved": len(todo)}
