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

from storage import batches, deadlines
from storage.db import transaction, translated_errors
from storage.errors import EscrowflowError, StorageBusy
from storage.statements import Batch, Statements
from workflows.defaults import BATCH_SIZE, LEASE
from workflows.engine import EscrowEngine
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
        engine: EscrowEngine,
        worker_id: str,
        batch_size: int = BATCH_SIZE,
        lease: timedelta = LEASE,
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
        # Pipelined (PostgreSQL): the batch's writes go out back to back, the client
        # waiting only where it reads and at commit; any error still fails the batch.
        with transaction(self.engine.db, pipelined=True) as conn:
            tx = Statements(self.engine.fast, conn, batch)
            found = batches.lock_and_read(tx, ordered)
            batch.prefetched = found
            held = {key[1] for key in found if key[0] == "contract"}
            ordered = self._without_held(tx, ordered, held, now, report)
            # History rows go with the batch under ids taken now: no round trip each.
            batches.reserve_history_ids(conn, batch, 2 * len(ordered))
            for row in ordered:
                report.count(self.engine.fire(conn, row.id, now, batch), row)
            tx.write_batch()
        return report

    def _fire_apart(self, ordered: Sequence[Any], now: datetime) -> SweepReport:
        report = SweepReport(batches=1, claimed=len(ordered), isolated=True)
        failures: list[tuple[int, str]] = []
        engine = self.engine
        retry = engine.deadline_retry
        with transaction(engine.db) as conn:
            tx = Statements(engine.fast, conn)
            held = batches.lock_contracts(tx, [r.contract_id for r in ordered])
            if held is not None:
                ordered = self._without_held(tx, ordered, held, now, report)
            for row in ordered:
                try:
                    with translated_errors(), tx.savepoint():
                        outcome = engine.fire(conn, row.id, now)
                except Exception as exc:  # one deadline's failure stays its own
                    if isinstance(exc, StorageBusy):  # a lock held elsewhere: not a failure
                        deadlines.record_blocked(tx, row.id, now, now + LOCK_RETRY)
                        report.blocked += 1
                        continue
                    message = exc.message if isinstance(exc, EscrowflowError) else repr(exc)
                    # DL3: storage or lock trouble is retried for ever; anything else
                    # gives up after the set attempts and the deadline is failed.
                    mendable = isinstance(exc, EscrowflowError) and exc.retryable
                    given_up = deadlines.record_failure(
                        tx,
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
        tx: Statements,
        ordered: Sequence[Any],
        held: set[int],
        now: datetime,
        report: SweepReport,
    ) -> list[Any]:
        """The deadlines whose contract this sweep holds; the others' contracts are
        locked by another connection: no waiting for them (nothing else stops because
        one row is held), they are tried again from `LOCK_RETRY` on."""
        kept = []
        for row in ordered:
            if row.contract_id in held:
                kept.append(row)
                if row.blocked_since is not None:  # it waited, and waits no more
                    deadlines.unblocked(tx, row.id)
            else:
                deadlines.record_blocked(tx, row.id, now, now + LOCK_RETRY)
                report.blocked += 1
        return kept

    def sweep(
        self, now: datetime | None = None, should_stop: Callable[[], bool] = lambda: False
    ) -> SweepReport:
        """Claim and fire batches until nothing is due (or we are asked to stop)."""
        total = SweepReport()
        self.engine.terms.current()  # TM1: stored before any sweep's transaction
        seen: set[int] = set()
        while not should_stop():
            moment = now or self.engine.clock.now()
            claimed = self.claim(moment)
            # A claim may leave no lease (where firing re-checks each deadline under the
            # one write lock): a deadline this sweep already had is not taken again.
            if not claimed or seen.intersection(row.id for row in claimed):
                break
            seen.update(row.id for row in claimed)
            total.add(self.fire(claimed, moment))
            if len(claimed) < self.batch_size:
                break
        return total

    def next_due(self) -> datetime | None:
        """When the next pending deadline (or retry) falls due, if any."""
        with translated_errors(), self.engine.db.connect() as conn:
            return deadlines.next_due(conn)


def fire_due(
    engine: EscrowEngine, now: datetime | None = None, limit: int = BATCH_SIZE
) -> SweepReport:
    """Fire every deadline due by `now`, oldest first, in batches (what the daemon does
    on a schedule), as a one-off worker."""
    return Sweeper(engine, worker_id="fire-due", batch_size=limit).sweep(now)
