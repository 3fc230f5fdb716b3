"""Metrics count what this process's worker fires, by entity, event and cause."""

from __future__ import annotations

import time
from datetime import timedelta

from escrowflow.metrics import Metrics
from scheduler.worker import Worker
from tests.helpers import Scenario


def test_the_worker_counts_timer_transitions_and_the_gauges_read_the_backlog(
    sc: Scenario,
) -> None:
    metrics = Metrics(sc.engine)
    _, milestone = sc.in_review(50_000)
    sc.clock.advance(timedelta(days=15))
    text = metrics.render().decode()
    assert "escrowflow_deadlines_backlog 1.0" in text
    assert "escrowflow_deadline_lag_seconds 86400.0" in text  # one day late
    worker = Worker(sc.engine, interval=0.05, on_report=metrics.observe_sweep)
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while sc.state("milestone", milestone) != "released" and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        worker.stop()
    text = metrics.render().decode()
    assert (
        'escrowflow_transitions_total{cause="timer",entity="milestone",event="auto_approve"} 1.0'
        in text
    )
    assert "escrowflow_deadlines_backlog 0.0" in text
    assert "escrowflow_deadline_lag_seconds 0.0" in text
