"""Prometheus metrics for `/metrics`.

Counters are this process's own (Prometheus sums them over processes): transitions
applied here by requests and by this process's worker (the event asked for or fired,
not the moves it cascades to), and webhook delivery failures. Gauges are read from the
database at scrape time, so every node reports the same backlog: pending and overdue
deadlines, the lag of the oldest overdue one, and deliveries pending or dead-lettered;
`escrowflow_database_up` is 0 (and those gauges absent) while the database is away.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from storage import deadlines, deliveries
from storage.db import translated_errors
from storage.errors import StorageError
from workflows.engine import EscrowEngine
from workflows.sweeper import SweepReport


class Metrics:
    def __init__(self, engine: EscrowEngine) -> None:
        self.registry = CollectorRegistry()
        self.transitions = Counter(
            "escrowflow_transitions",
            "Events applied, by entity, event and cause (request or timer).",
            ["entity", "event", "cause"],
            registry=self.registry,
        )
        self.webhook_failures = Counter(
            "escrowflow_webhook_failures",
            "Failed webhook delivery attempts; outcome=dead when dead-lettered.",
            ["outcome"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "escrowflow_http_request_seconds",
            "HTTP request durations by route and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.registry.register(_DatabaseGauges(engine))

    def observe_sweep(self, report: SweepReport) -> None:
        for (entity, event), count in report.fired_events.items():
            self.transitions.labels(entity, event, "timer").inc(count)

    def observe_webhook_failure(self, outcome: str) -> None:
        self.webhook_failures.labels(outcome).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _DatabaseGauges(Collector):
    def __init__(self, engine: EscrowEngine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            now = self.engine.clock.now()
            with translated_errors(), self.engine.db.connect() as conn:
                found = deadlines.gauges(conn, now)
                counts = deliveries.counts(conn)
        except StorageError:  # the database is away (a switch to a standby): say so
            yield GaugeMetricFamily(
                "escrowflow_database_up", "1: the database answered this scrape.", value=0
            )
            return
        yield GaugeMetricFamily(
            "escrowflow_database_up", "1: the database answered this scrape.", value=1
        )
        yield GaugeMetricFamily(
            "escrowflow_deadlines_pending", "Deadlines waiting to fire.", value=found["pending"]
        )
        yield GaugeMetricFamily(
            "escrowflow_deadlines_backlog",
            "Deadlines due now or earlier and not yet fired.",
            value=found["overdue"],
        )
        oldest_due = found["oldest_due"]
        lag = (now - oldest_due).total_seconds() if oldest_due is not None else 0.0
        yield GaugeMetricFamily(
            "escrowflow_deadline_lag_seconds",
            "How late the most overdue unfired deadline is.",
            value=lag,
        )
        yield GaugeMetricFamily(
            "escrowflow_deadlines_failing",
            "Deadlines whose firing failed and is being retried with backoff.",
            value=found["failing"],
        )
        yield GaugeMetricFamily(
            "escrowflow_deadlines_failed",
            "DL3: deadlines failed after their attempts, waiting for an admin's retry.",
            value=found["failed"],
        )
        skew = self.engine.clock_skew().total_seconds()
        yield GaugeMetricFamily(
            "escrowflow_clock_skew_seconds",
            "DL2: this process's clock minus the database's (positive: ahead).",
            value=skew,
        )
        by_status = GaugeMetricFamily(
            "escrowflow_webhook_deliveries",
            "Webhook deliveries pending or dead-lettered.",
            labels=["status"],
        )
        for status in ("pending", "dead"):
            by_status.add_metric([status], counts.get(status, 0))
        yield by_status
