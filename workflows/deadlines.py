"""Firing due deadlines in batches: claim, fire each in a savepoint, record failures.

A sweep claims due deadlines in `due_at` order in a short transaction (on PostgreSQL
with `FOR UPDATE SKIP LOCKED`, so several workers share the work without a leader) and
marks them with a lease; then it fires the batch in one transaction, each deadline in a
savepoint, locking contracts in ascending id order. The claim holds no contract lock and
the batch holds no lock on unclaimed rows, so a party's action (contract, then its
deadlines) cannot deadlock with a worker, and two workers lock contracts in the same
order. A deadline whose firing raises is rolled back alone, and retried with backoff; a
crashed worker's claims run out after the lease and are claimed again. Firing stays
exactly-once because it re-checks the deadline under the contract lock.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection

from storage import deadlines, entities, history
from storage.db import transaction, translated_errors
from storage.errors import EscrowflowError, StorageBusy
from storage.writes import Batch, Writes
from workflows import reminders
from workflows.actors import SYSTEM
from workflows.engine import Engine
from workflows.machines import MACHINES, timer_of
from workflows.retry import LOCK_RETRY


@dataclass
class SweepReport:
    """What sweeps did: how long they took, what went wrong, and the deadlines by outcome."""

    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    batches: int = 0
    claimed: int = 0
    fired: int = 0
    stale: int = 0
    gone: int = 0
    failed: int = 0
    # Left for a later sweep: their contract was locked by another connection.
    blocked: int = 0
    # A batch fired a second time one deadline at a time, because the first try raised.
    isolated: bool = False
    # Fired deadlines by (entity, event), for the metrics.
    fired_events: Counter[tuple[str, str]] = field(default_factory=Counter)

    def add(self, other: SweepReport) -> None:
        for name in ("batches", "claimed", "fired", "stale", "gone", "failed", "blocked"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors.extend(other.errors)
        self.fired_events.update(other.fired_events)
        self.seconds += other.seconds
        self.isolated = self.isolated or other.isolated

    def count(self, outcome: str, deadline: Any) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)
        if outcome == "fired":
            self.fired_events[(deadline.entity, deadline.event)] += 1


class Sweeper:
    def __init__(
        self,
        engine: Engine,
        worker_id: str,
        batch_size: int = 500,
        lease: timedelta = timedelta(seconds=60),
        on_batch: Callable[[SweepReport], None] | None = None,
    ) -> None:
        self.engine = engine
        self.worker_id = worker_id
        self.batch_size = batch_size
        self.lease = lease
        self.on_batch = on_batch

    def claim(self, now: datetime) -> list[Any]:
        """Claim up to a batch of due deadlines, oldest first, for this worker."""
        with transaction(self.engine.db) as conn:
            return deadlines.claim_due(conn, self.worker_id, now, now + self.lease, self.batch_size)

    def fire(self, claimed: Sequence[Any], now: datetime) -> SweepReport:
        """Fire a claimed batch in one transaction; a failure isolates each deadline.

        First all together, append-only rows written at the end with one executemany per
        kind. If anything raises, that transaction rolls back and the batch is fired
        again one savepoint per deadline, so only the failing one fails.
        """
        started = time.perf_counter()
        # Contracts are locked in ascending id order: no lock cycle between workers.
        ordered = sorted(claimed, key=lambda row: (row.contract_id, row.due_at, row.id))
        try:
            report = self._fire_together(ordered, now)
        except Exception:  # the careful pass finds and records the culprit
            report = self._fire_apart(ordered, now)
        report.seconds = time.perf_counter() - started
        if self.on_batch is not None:
            self.on_batch(report)
        return report

    def _fire_together(self, ordered: Sequence[Any], now: datetime) -> SweepReport:
        report = SweepReport(batches=1, claimed=len(ordered))
        batch = Batch()
        with transaction(self.engine.db) as conn:
            writes = Writes(self.engine.fast, conn, batch)
            if conn.dialect.name == "postgresql":  # SQLite reads each in one statement
                batch.prefetched = _prefetch(conn, ordered)
                ordered = self._without_held(writes, ordered, batch.prefetched, now, report)
                # History rows go with the batch under ids taken now (after the locks,
                # so a contract's rows keep their order): no round trip per deadline.
                batch.ids["history"] = history.take_ids(conn, 2 * len(ordered))
            for row in ordered:
                report.count(fire_one(self.engine, conn, row.id, now, batch), row)
            writes.write_batch()
        return report

    def _fire_apart(self, ordered: Sequence[Any], now: datetime) -> SweepReport:
        report = SweepReport(batches=1, claimed=len(ordered), isolated=True)
        failures: list[tuple[int, str]] = []
        engine = self.engine
        retry = engine.deadline_retry
        with transaction(engine.db) as conn:
            writes = Writes(engine.fast, conn)
            if conn.dialect.name == "postgresql":
                locked = {("contract", r["id"]): r for r in _lock_contracts(conn, ordered)}
                ordered = self._without_held(writes, ordered, locked, now, report)
            for row in ordered:
                try:
                    with translated_errors(), writes.savepoint():
                        outcome = fire_one(engine, conn, row.id, now)
                except Exception as exc:  # one deadline's failure stays its own
                    if isinstance(exc, StorageBusy):  # a lock held elsewhere: not a failure
                        deadlines.record_blocked(writes, row.id, now, now + LOCK_RETRY)
                        report.blocked += 1
                        continue
                    message = exc.message if isinstance(exc, EscrowflowError) else repr(exc)
                    # DL3: storage or lock trouble is retried for ever; anything else
                    # gives up after the set attempts and the deadline is failed.
                    mendable = isinstance(exc, EscrowflowError) and exc.retryable
                    given_up = deadlines.record_failure(
                        writes,
                        row.id,
                        message,
                        now,
                        lambda n: now + retry.wait(n),
                        (lambda n: False) if mendable else retry.gives_up,
                    )
                    failures.append((row.id, ("failed for good: " if given_up else "") + message))
                    continue
                report.count(outcome, row)
        report.failed = len(failures)
        report.errors = [f"deadline {i}: {m}" for i, m in failures]
        return report

    @staticmethod
    def _without_held(
        writes: Writes,
        ordered: Sequence[Any],
        locked: dict[tuple[str, int], Any],
        now: datetime,
        report: SweepReport,
    ) -> list[Any]:
        """The deadlines whose contract this sweep holds; the others' contracts are
        locked by another connection: no waiting for them (nothing else stops because
        one row is held), they are tried again from `LOCK_RETRY` on."""
        kept = []
        for row in ordered:
            if ("contract", row.contract_id) in locked:
                kept.append(row)
            else:
                deadlines.record_blocked(writes, row.id, now, now + LOCK_RETRY)
                report.blocked += 1
        return kept

    def sweep(
        self, now: datetime | None = None, should_stop: Callable[[], bool] = lambda: False
    ) -> SweepReport:
        """Claim and fire batches until nothing is due (or we are asked to stop)."""
        total = SweepReport()
        while not should_stop():
            moment = now or self.engine.clock.now()
            claimed = self.claim(moment)
            if not claimed:
                break
            total.add(self.fire(claimed, moment))
            if len(claimed) < self.batch_size:
                break
        return total

    def next_due(self) -> datetime | None:
        """When the next pending deadline (or retry) falls due, if any."""
        with translated_errors(), self.engine.db.connect() as conn:
            return deadlines.next_due(conn)


def _lock_contracts(conn: Connection, ordered: Sequence[Any]) -> list[dict[str, Any]]:
    """The batch's contracts, locked in id order, but those another connection holds."""
    return entities.lock_many(conn, sorted({r.contract_id for r in ordered}))


def _prefetch(conn: Connection, ordered: Sequence[Any]) -> dict[tuple[str, int], Any]:
    """Lock the batch's contracts (in id order, skipping those held elsewhere) and read
    its deadlines and their entities, a few statements for the whole batch instead of
    three per deadline."""
    found: dict[tuple[str, int], Any] = {}
    for row in _lock_contracts(conn, ordered):
        found[("contract", row["id"])] = row
    for row in deadlines.read_many(conn, [r.id for r in ordered]):
        found[("deadline", row["id"])] = row
    kinds: dict[str, list[int]] = {}
    for r in ordered:
        kinds.setdefault(r.entity, []).append(r.entity_id)
    for entity, ids in kinds.items():
        for row in entities.read_many(conn, entity, ids):
            found[(entity, row["id"])] = row
    return found


def fire_one(
    engine: Engine,
    conn: Connection,
    deadline_id: int,
    now: datetime,
    batch: Batch | None = None,
) -> str:
    """Fire one deadline inside the caller's transaction: "fired", "stale" or "gone".

    With `batch`, its append-only rows wait there for the caller to write.

    A deadline fires only if its entity still has the version it was scheduled for;
    otherwise the entity has moved on (a party acted first) and it is marked stale. A
    reminder (NT2) fires the same way, but writes only its history row and feed event;
    one whose timer is already due is stale (too late to remind).
    "gone": already fired or cancelled (another worker, or a party, got there first).
    """
    unit = engine.work(conn, SYSTEM, "timer", now, batch)
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
        deadlines.close(unit.writes, deadline_id, "stale", now, None)
        return "stale"
    if reminder is not None:  # NT2: tell the party who can act; nothing moves
        step = reminders.send(unit, record, timer, timer_due)
        deadlines.close(unit.writes, deadline_id, "fired", now, step.history_id)
        return "fired"
    step = unit.transition(record, deadline["event"], {})
    unit.close_if_settled(step)
    unit.flush()
    deadlines.close(unit.writes, deadline_id, "fired", now, step.history_id)
    return "fired"


def fire_due(engine: Engine, now: datetime | None = None, limit: int = 500) -> SweepReport:
    """Fire every deadline due by `now`, oldest first, in batches (what the daemon does
    on a schedule), as a one-off worker."""
    return Sweeper(engine, worker_id="fire-due", batch_size=limit).sweep(now)
