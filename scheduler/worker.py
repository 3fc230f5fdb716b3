"""The daemon's worker: APScheduler is the clock that drives the deadline sweeps.

One interval job sweeps (claims and fires due deadlines, batch after batch while a
backlog remains). After each sweep the job is moved to when the next deadline falls
due, if that is sooner than the interval. The first sweep runs at once: every overdue
deadline fires on start-up, oldest first. Deadlines are rows, not APScheduler jobs, so
several workers on one PostgreSQL share them without a leader.

A third interval job carries out the bulk actions on deadlines that admins applied
(DL4), one page of items at a time, holding each by a lease so that another worker
resumes it if this one dies.

`stop()` lets the batch in hand finish, then shuts APScheduler down.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from scheduler.webhooks import Dispatcher
from storage import deadlines, workers
from storage.db import translated_errors, whereabouts
from workflows.clock import DEFAULT_MAX_CLOCK_SKEW
from workflows.defaults import BATCH_SIZE, LEASE, WORKER_INTERVAL_SECONDS
from workflows.engine import EscrowEngine
from workflows.sweeper import Sweeper, SweepReport

JOB_ID = "escrowflow-sweep"
WEBHOOKS_JOB_ID = "escrowflow-webhooks"
BULK_JOB_ID = "escrowflow-bulk"
log = logging.getLogger("escrowflow.worker")


class JsonLines(logging.Formatter):
    """One JSON object per log line: time, level, message and the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
        }
        line.update(getattr(record, "fields", {}))
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class _LongRunsAreExpected(logging.Filter):
    """A sweep draining a backlog, or a dispatch waiting on slow receivers, outlasts the
    interval: APScheduler then skips the next run and would warn every second about
    something that is no fault."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in record.getMessage()


logging.getLogger("apscheduler.scheduler").addFilter(_LongRunsAreExpected())
logging.getLogger("apscheduler.executors.default").addFilter(_LongRunsAreExpected())


class Worker:
    def __init__(
        self,
        engine: EscrowEngine,
        *,
        interval: float = WORKER_INTERVAL_SECONDS,
        batch_size: int = BATCH_SIZE,
        lease: timedelta = LEASE,
        max_clock_skew: timedelta = DEFAULT_MAX_CLOCK_SKEW,
        worker_id: str | None = None,
        dispatcher: Callable[[str], Dispatcher] | None = None,
        on_report: Callable[[SweepReport], None] | None = None,
    ) -> None:
        """`dispatcher` builds the webhook dispatcher for this worker's id (none: no
        webhooks sent from here); `on_report` sees every batch (the metrics)."""
        self.engine = engine
        self.interval = interval
        self.max_clock_skew = max_clock_skew
        self.clock_skew: timedelta | None = None
        self.id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.sweeper = Sweeper(engine, self.id, batch_size, lease, on_batch=self._log_batch)
        self.totals = SweepReport()
        self._stopping = threading.Event()
        # APScheduler's shutdown holds its job-store lock while it waits for the running
        # sweep, so a sweep must not move its job once shutdown has begun: the move and
        # the start of stopping take this lock, and a sweep moves its job only if not
        # stopping.
        self._moving = threading.Lock()
        self._scheduler = BackgroundScheduler(timezone=UTC)
        self.sweeps = 0
        self._unreported = SweepReport()
        self._last_heartbeat = 0.0
        self.on_report = on_report
        self.dispatcher = dispatcher(self.id) if dispatcher is not None else None

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        # TM1: the terms in force are stored (and contracts from before terms given them)
        # before the worker says it has started: start-up work, not a sweep's.
        self.engine.terms.current()
        self._heartbeat(started=True)
        self._every_interval(self._tick, JOB_ID)
        if self.dispatcher is not None:
            self._every_interval(self._dispatch, WEBHOOKS_JOB_ID)
        self._every_interval(self._run_bulk, BULK_JOB_ID)
        self._scheduler.start()
        log.info(
            "worker started",
            extra={"fields": {"event": "start", "worker": self.id, "interval_s": self.interval}},
        )

    def stop(self) -> None:
        """Finish the batch in hand, then stop (not from a signal handler: it waits)."""
        with self._moving:
            self._stopping.set()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)
        if self.dispatcher is not None:
            self.dispatcher.close()
        self._heartbeat(stopped=True, report=self._unreported)
        self._unreported = SweepReport()
        log.info(
            "worker stopped",
            extra={"fields": {"event": "stop", "worker": self.id, "fired": self.totals.fired}},
        )

    def _every_interval(self, job: Callable[[], None], job_id: str) -> None:
        """An interval job that runs at once (catching up on start), one run at a time,
        a late run still wanted however late."""
        self._scheduler.add_job(
            job,
            IntervalTrigger(seconds=self.interval, timezone=UTC),
            id=job_id,
            next_run_time=datetime.now(UTC),
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    # -- the job ------------------------------------------------------------------

    def _tick(self) -> None:
        try:
            report = self.sweeper.sweep(should_stop=self._stopping.is_set)
        except Exception:
            log.exception(
                "sweep failed", extra={"fields": {"event": "sweep_error", "worker": self.id}}
            )
            return
        self.sweeps += 1
        self.totals.add(report)
        self._unreported.add(report)
        # At most one heartbeat per interval: on a busy trickle a write per tick (an fsync
        # on SQLite) would cost more than the firing.
        if time.monotonic() - self._last_heartbeat >= self.interval:
            self._heartbeat(report=self._unreported)
            self._unreported = SweepReport()
        self._wake_for_next_deadline()

    def _dispatch(self) -> None:
        assert self.dispatcher is not None
        try:
            self.dispatcher.run(should_stop=self._stopping.is_set)
        except Exception:
            log.exception(
                "webhook dispatch failed",
                extra={"fields": {"event": "dispatch_error", "worker": self.id}},
            )

    def _run_bulk(self) -> None:
        """DL4: carry out applied bulk actions, one after another, until none is free."""
        try:
            while not self.stopping:
                if self.engine.run_bulk(self.id, should_stop=self._stopping.is_set) is None:
                    return
        except Exception:
            log.exception(
                "bulk action failed", extra={"fields": {"event": "bulk_error", "worker": self.id}}
            )

    def _wake_for_next_deadline(self) -> None:
        if self.stopping:
            return
        due = self.sweeper.next_due()
        if due is None:
            return
        wait = (due - self.engine.clock.now()).total_seconds()
        if wait < self.interval:
            when = datetime.now(UTC) + timedelta(seconds=max(wait, 0.0))
            with self._moving:
                if not self.stopping:
                    self._scheduler.modify_job(JOB_ID, next_run_time=when)

    def _log_batch(self, report: SweepReport) -> None:
        if self.on_report is not None:
            self.on_report(report)
        log.info(
            "batch",
            extra={
                "fields": {
                    "event": "batch",
                    "worker": self.id,
                    "claimed": report.claimed,
                    "fired": report.fired,
                    "stale": report.stale,
                    "gone": report.gone,
                    "failed": report.failed,
                    "isolated": report.isolated,
                    "waiting_on_lock": report.blocked,
                    "ms": round(report.seconds * 1000, 1),
                }
            },
        )
        for error in report.errors:
            log.warning(
                "deadline failed",
                extra={"fields": {"event": "deadline_failed", "worker": self.id, "error": error}},
            )

    # -- heartbeat ----------------------------------------------------------------

    def _measure_skew(self) -> float | None:
        """This host's clock against the deployment's (DL2), at start and every heartbeat;
        beyond `max_clock_skew` an error line (it decides nothing: the deployment's
        clock does)."""
        try:
            self.clock_skew = self.engine.clock_skew()
        except Exception:
            log.exception("clock skew not measured", extra={"fields": {"event": "skew_error"}})
            return None
        seconds = self.clock_skew.total_seconds()
        if abs(self.clock_skew) > self.max_clock_skew:
            log.error(
                "this host's clock is off the database's: fix its time (NTP)",
                extra={
                    "fields": {
                        "event": "clock_skew",
                        "worker": self.id,
                        "skew_s": round(seconds, 3),
                        "max_s": self.max_clock_skew.total_seconds(),
                    }
                },
            )
        return seconds

    def _heartbeat(
        self, *, started: bool = False, stopped: bool = False, report: SweepReport | None = None
    ) -> None:
        self._last_heartbeat = time.monotonic()
        try:
            skew = self._measure_skew()
            now = self.engine.clock.now()
            if started:
                workers.started(
                    self.engine.db,
                    {
                        "id": self.id,
                        "host": socket.gethostname(),
                        "pid": os.getpid(),
                        "interval_seconds": self.interval,
                        "started_at": now,
                        "last_seen_at": now,
                        "clock_skew_seconds": skew,
                    },
                )
                return
            swept = None if report is None else (report.fired, report.stale, report.failed)
            workers.seen(
                self.engine.db,
                self.id,
                now,
                clock_skew_seconds=skew,
                swept=swept,
                stopped=stopped,
            )
        except Exception:
            # A missed heartbeat must not stop the deadlines from firing.
            log.exception("heartbeat failed", extra={"fields": {"event": "heartbeat_error"}})


def worker_status(engine: EscrowEngine) -> dict[str, Any]:
    """Workers alive, their last sweeps and clock skews, pending and overdue deadlines,
    failing, failed and lock-blocked ones. Alive is judged on the deployment's clock
    (DL2), which stamped the heartbeats, never on the observer's own."""
    now = engine.clock.now()
    skew = engine.clock_skew().total_seconds()
    with translated_errors(), engine.db.connect() as conn:
        found = workers.every(conn)
        backlog = deadlines.status(conn, now)
    alive = []
    for w in found:
        grace = timedelta(seconds=max(3 * w["interval_seconds"], 10))
        alive.append({**w, "alive": w["stopped_at"] is None and now - w["last_seen_at"] <= grace})
    return {
        "now": now,
        "clock_skew_seconds": skew,
        "database": whereabouts(engine.db),
        "workers": alive,
        **backlog,
    }
