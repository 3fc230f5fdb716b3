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

import sqlalchemy as sa

from storage import models
from storage.db import claim, transaction, translated_errors, unclaimed
from storage.errors import EscrowflowError
from workflows.engine import Appends, Engine
from workflows.retry import DEADLINE_RETRY

_deadlines = models.DEADLINES


@dataclass
class SweepReport:
    batches: int = 0
    claimed: int = 0
    fired: int = 0
    stale: int = 0
    gone: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # A batch fired a second time one deadline at a time, because the first try raised.
    isolated: bool = False
    # Fired deadlines by (entity, event), for the metrics.
    fired_events: Counter[tuple[str, str]] = field(default_factory=Counter)

    def add(self, other: SweepReport) -> None:
        for name in ("batches", "claimed", "fired", "stale", "gone", "failed"):
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

    def _due(self, now: datetime) -> sa.ColumnElement[bool]:
        c = _deadlines.c
        return sa.and_(
            c.status == "pending",
            c.paused.is_(False),
            c.due_at <= now,
            sa.or_(c.next_attempt_at.is_(None), c.next_attempt_at <= now),
            unclaimed(_deadlines, now),
        )

    def claim(self, now: datetime) -> list[Any]:
        """Claim up to a batch of due deadlines, oldest first, for this worker."""
        c = _deadlines.c
        query = (
            sa.select(c.id, c.contract_id, c.due_at, c.entity, c.event)
            .where(self._due(now))
            .order_by(c.due_at, c.id)
            .limit(self.batch_size)
        )
        with transaction(self.engine.db) as conn:
            return claim(conn, query, _deadlines, self.worker_id, now + self.lease)

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
        appends = Appends()
        engine = self.engine
        with transaction(engine.db) as conn:
            for row in ordered:
                if row.contract_id in appends.touched:  # it must read what it wrote
                    appends.write(engine.fast, conn)
                outcome = engine.fire_deadline_in(conn, row.id, now, appends)
                report.count(outcome, row)
            appends.write(engine.fast, conn)
        return report

    def _fire_apart(self, ordered: Sequence[Any], now: datetime) -> SweepReport:
        report = SweepReport(batches=1, claimed=len(ordered), isolated=True)
        failures: list[tuple[int, str]] = []
        with transaction(self.engine.db) as conn:
            for row in ordered:
                try:
                    with translated_errors(), self.engine.fast.savepoint(conn):
                        outcome = self.engine.fire_deadline_in(conn, row.id, now)
                except Exception as exc:  # one deadline's failure stays its own
                    message = exc.message if isinstance(exc, EscrowflowError) else repr(exc)
                    failures.append((row.id, message))
                    self._record_failure(conn, row.id, message, now)
                    continue
                report.count(outcome, row)
        report.failed = len(failures)
        report.errors = [f"deadline {i}: {m}" for i, m in failures]
        return report

    @staticmethod
    def _record_failure(conn: sa.Connection, deadline_id: int, message: str, now: datetime) -> None:
        c = _deadlines.c
        attempts = conn.execute(sa.select(c.attempts).where(c.id == deadline_id)).scalar_one()
        conn.execute(
            _deadlines.update()
            .where(c.id == deadline_id)
            .values(
                attempts=attempts + 1,
                last_error=message[:2000],
                next_attempt_at=now + DEADLINE_RETRY.wait(attempts + 1),
                claimed_by=None,
                claim_expires_at=None,
            )
        )

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
        """When the next pending deadline (or retry) falls due, if any.

        Each half walks its partial index to the first row: cheap with a million pending.
        """
        c = _deadlines.c
        pending = sa.and_(c.status == "pending", c.paused.is_(False))
        with translated_errors(), self.engine.db.connect() as conn:
            due = conn.execute(
                sa.select(c.due_at)
                .where(pending, c.next_attempt_at.is_(None))
                .order_by(c.due_at)
                .limit(1)
            ).scalar()
            retry = conn.execute(
                sa.select(c.next_attempt_at)
                .where(pending, c.next_attempt_at.is_not(None))
                .order_by(c.next_attempt_at)
                .limit(1)
            ).scalar()
        found = [t for t in (due, retry) if t is not None]
        return min(found) if found else None
