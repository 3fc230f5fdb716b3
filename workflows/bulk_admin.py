"""The engine's bulk actions on deadlines (DL4): preview, apply by id, undo."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from storage import bulk_actions
from storage.db import transaction
from storage.errors import ConflictError, EscrowflowError, ValidationError
from storage.statements import Statements
from workflows import access, bulk, deadline_admin, terms_migration
from workflows.actors import Actor
from workflows.engine_part import EnginePart, Result
from workflows.parallel import each_in_parallel


class BulkAdmin(EnginePart):
    """Part of `EscrowEngine`: pausing, resuming, extending or retrying many deadlines."""

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

        each_in_parallel(one, todo, terms_migration.APPLY_THREADS, on_progress)
        finished = {"status": "done", "applied_at": self.clock.now()}
        with transaction(self.db) as conn:
            bulk_actions.update(conn, bulk_id, finished)
            results = bulk_actions.results(conn, bulk_id)
        return {**found, **finished, "applied": len(todo), "results": results}
