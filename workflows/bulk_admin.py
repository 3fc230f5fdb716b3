"""The engine's bulk actions on deadlines (DL4): preview, apply by id (a background job
a worker carries out, leased, resumable), undo."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection

from storage import approvals, batches, bulk_actions, history
from storage.db import transaction, translated_errors
from storage.errors import (
    ConflictError,
    EscrowflowError,
    NotFound,
    PermissionDenied,
    StorageBusy,
    ValidationError,
)
from storage.statements import Batch, Statements
from workflows import access, bulk, deadline_admin
from workflows.actors import Actor, Role
from workflows.approvals import shown, threshold_of
from workflows.defaults import BULK_CHUNK, BULK_PAGE, BULK_THREADS, LEASE
from workflows.engine_part import EnginePart, Result
from workflows.parallel import each_in_parallel

log = logging.getLogger("escrowflow.bulk")
_NOTHING = contextlib.nullcontext()


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

    def start_bulk(self, actor: Actor, bulk_id: int, reason: str) -> Result:
        """DL4: apply a preview by its id, with a reason: it becomes a running job that a
        worker (or `run_bulk` here) carries out. Refused if expired or if its selection
        now takes deadlines the preview did not show; applying it again changes nothing."""
        access.require_admin(actor, "apply a bulk action on deadlines")
        reason = deadline_admin.checked_reason(reason)
        now = self.clock.now()
        with transaction(self.db) as conn:
            found = bulk.stored(conn, bulk_id)
            if found["status"] != "previewed":
                return found
            if now > found["valid_until"]:
                raise ConflictError(
                    f"bulk action {bulk_id} was previewed at "
                    f"{found['created_at'].isoformat()} and has expired: preview again",
                    code="preview_expired",
                )
            if found["undoes"] is None:
                again = bulk.select(conn, found["action"], found["selection"])
                previewed = bulk_actions.items(conn, bulk_id)
                added = bulk.differences(previewed, again)["added"]
                if added:
                    raise bulk.stale(bulk_id, added)
            waits = self._second_admin_for(conn, actor, found, reason, now)
            if waits is not None:  # PA4: proposed; a second admin applies it
                return {**found, "approval": waits}
            started = {
                "status": "running",
                "reason": reason,
                "applied_by": actor.party,
                "started_at": now,
            }
            bulk_actions.update(conn, bulk_id, started)
        return {**found, **started}

    def _second_admin_for(
        self,
        conn: Connection,
        actor: Actor,
        found: Mapping[str, Any],
        reason: str,
        now: datetime,
    ) -> dict[str, Any] | None:
        """PA4: a bulk retry fires failed deadlines, which release or refund: above the
        threshold in any currency, the first admin's apply is a proposal (returned), and
        a second, different admin's apply approves it (None: go on)."""
        if found["action"] != "retry":
            return None
        totals: dict[str, int] = defaultdict(int)
        for day in found["money"]:
            totals[day["currency"]] += int(day["amount"])
        above = {c: n for c, n in totals.items() if n > threshold_of(self.second_approval_above, c)}
        if not above:
            return None
        waiting = approvals.pending_for(conn, "bulk_action", found["id"])
        if waiting is None:
            currency, amount = max(above.items(), key=lambda item: item[1])
            values = {
                "contract_id": None, "entity": "bulk_action", "entity_id": found["id"],
                "event": "apply", "payload": {"reason": reason}, "entity_version": 0,
                "amount": amount, "currency": currency, "status": "pending",
                "proposed_by": actor.party, "proposed_at": now, "reason": reason,
            }  # fmt: skip
            approval_id = approvals.create(Statements(self.fast, conn), values)
            return shown({**values, "id": approval_id, "decided_by": None})
        if waiting["proposed_by"] == actor.party:
            raise PermissionDenied(
                f"bulk action {found['id']} was proposed by {actor.party}: a second, "
                "different admin must apply it",
                code="same_admin",
            )
        decided = {"status": "approved", "decided_by": actor.party, "decided_at": now}
        approvals.decide(conn, waiting["id"], decided)
        return None

    def run_bulk(
        self,
        runner: str,
        bulk_id: int | None = None,
        on_progress: Callable[[int, int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Result | None:
        """DL4: carry out a running bulk action (`bulk_id`, or the oldest one free) as
        `runner`, holding it by a lease on the engine's clock: its items without a result,
        a chunk per transaction, chunks in parallel; resumes where a runner that died or
        stopped left it. None if there was none to take; else the action as it ends (done,
        or still running if `should_stop` or another runner took it over)."""
        with self.db.connect() as conn:  # idle: a read, no write lock taken
            if not bulk_actions.any_running(conn, bulk_id):
                return None
        self.terms.current()  # stored before any transaction, in one of its own
        now = self.clock.now()
        with transaction(self.db) as conn:
            taken = bulk_actions.claim(conn, runner, now, now + LEASE, bulk_id)
            if taken is None:
                return None
            job = bulk.stored(conn, taken)
        fields = {"event": "bulk_start", "bulk": taken, "runner": runner}
        log.info("bulk action taken", extra={"fields": fields})
        total = job["deadlines"]
        waiting = total + 1
        while True:
            with self.db.connect() as conn:
                todo = bulk_actions.items(conn, taken, unfinished=True, limit=BULK_PAGE)
            if not todo:
                break
            chunks = [todo[i : i + BULK_CHUNK] for i in range(0, len(todo), BULK_CHUNK)]
            each_in_parallel(
                lambda chunk: self._apply_chunk(job, chunk), chunks, BULK_THREADS, None
            )
            now = self.clock.now()
            with transaction(self.db) as conn:
                kept = bulk_actions.renew(conn, taken, runner, now + LEASE)
                counts = bulk_actions.results(conn, taken)
            if on_progress is not None:
                on_progress(total - counts.get("waiting", 0), total)
            if not kept:  # taken over (our lease lapsed): the other runner goes on
                return {**job, "results": counts}
            # No item of the page got a result: each waits on a contract another
            # connection holds. Let go; the next run (a worker's next tick) tries again.
            stalled = counts.get("waiting", 0) >= waiting
            waiting = counts.get("waiting", 0)
            if stalled or (should_stop is not None and should_stop()):
                with transaction(self.db) as conn:
                    bulk_actions.let_go(conn, taken, runner)
                return {**job, "results": counts}
        finished = {
            "status": "done",
            "applied_at": self.clock.now(),
            "runner": None,
            "lease_until": None,
        }
        with transaction(self.db) as conn:
            bulk_actions.update(conn, taken, finished)
            counts = bulk_actions.results(conn, taken)
        fields = {"event": "bulk_done", "bulk": taken, "runner": runner, **counts}
        log.info("bulk action done", extra={"fields": fields})
        return {**job, **finished, "results": counts}

    def apply_bulk(
        self,
        actor: Actor,
        bulk_id: int,
        reason: str,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> Result:
        """DL4: `start_bulk`, then carry it out here (the CLI's way, with its progress);
        if a worker holds it already, wait for nothing: it is theirs."""
        found = self.start_bulk(actor, bulk_id, reason)
        with self.db.connect() as conn:
            waiting = bulk_actions.results(conn, bulk_id).get("waiting", 0)
        if found["status"] == "running":
            self.run_bulk(f"apply:{actor.party}:{uuid.uuid4().hex[:8]}", bulk_id, on_progress)
        with self.db.connect() as conn:
            done = bulk.stored(conn, bulk_id)
            results = bulk_actions.results(conn, bulk_id)
        applied = waiting - results.get("waiting", 0)
        return {**done, "results": results, "applied": applied, "approval": found.get("approval")}

    def _apply_chunk(self, job: Mapping[str, Any], chunk: list[dict[str, Any]]) -> None:
        """A chunk of items in one transaction; if anything in it raises, the chunk again
        one savepoint per item, so only the failing one fails (and is recorded so)."""
        ordered = sorted(chunk, key=lambda item: (item["contract_id"], item["deadline_id"]))
        try:
            with transaction(self.db, pipelined=True) as conn:
                self._apply_items(conn, job, ordered, isolated=False)
        except Exception:  # the careful pass finds and records the culprit
            with transaction(self.db) as conn:
                self._apply_items(conn, job, ordered, isolated=True)

    def _apply_items(
        self,
        conn: Connection,
        job: Mapping[str, Any],
        items: list[dict[str, Any]],
        *,
        isolated: bool,
    ) -> None:
        """As the sweeper fires a batch: the chunk's contracts locked in ascending id
        order (no lock cycle with a sweep), its deadlines, their entities and history
        counts read at once, the rows nobody reads back written together at the end.
        `isolated`: one savepoint per item instead; a failure is recorded as the
        item's result, and an item whose contract another connection holds past the
        lock timeout is left for the next pass."""
        actor = Actor(Role.ADMIN, job["applied_by"])  # the history's who: who applied it
        extend_by = None if job["extend_ms"] is None else timedelta(milliseconds=job["extend_ms"])
        now = self.clock.now()
        ids = [item["deadline_id"] for item in items]
        contract_ids = [item["contract_id"] for item in items]
        batch = None if isolated else Batch()
        if batch is not None:
            reads = Statements(self.fast, conn, batch)
            batch.prefetched = batches.lock_and_read_ids(reads, contract_ids, ids)
            batches.reserve_history_ids(conn, batch, len(items))
        else:
            batches.lock_contracts(Statements(self.fast, conn), contract_ids)
        versions = history.counts_of(conn, "deadline", ids)
        for item in items:
            unit = self.work(conn, actor, "request", now, batch)
            deadline_id = item["deadline_id"]
            try:
                with translated_errors(), unit.tx.savepoint() if isolated else _NOTHING:
                    row = unit.lock_deadline(deadline_id)
                    moved = deadline_admin.moved_on(row, item)
                    if moved is None:
                        deadline_admin.adjust(
                            unit, deadline_id, job["action"], job["reason"], extend_by,
                            bulk_id=job["id"], row=row, version=versions.get(deadline_id, 0) + 1,
                        )  # fmt: skip
                        unit.flush()
                    bulk_actions.record_result(
                        unit.tx, job["id"], deadline_id,
                        "done" if moved is None else "skipped", moved, now,
                    )  # fmt: skip
            except NotFound:  # deleted with its entity since the preview
                if not isolated:
                    raise
                bulk_actions.record_result(
                    unit.tx, job["id"], deadline_id, "skipped", "it is gone since the preview", now
                )
            except StorageBusy:
                if not isolated:
                    raise
                continue  # its contract is held elsewhere: the next pass tries again
            except Exception as error:
                if not isolated:
                    raise
                message = error.message if isinstance(error, EscrowflowError) else repr(error)
                bulk_actions.record_result(
                    unit.tx, job["id"], deadline_id, "failed", message[:500], now
                )
        if batch is not None:
            Statements(self.fast, conn, batch).write_batch()
