"""The worker as the shells run it: deadline sweeps plus webhook dispatch, from settings."""

from __future__ import annotations

from escrowflow.metrics import Metrics
from escrowflow.settings import Settings
from scheduler.webhooks import Dispatcher
from scheduler.worker import Worker
from workflows.engine import EscrowEngine


def build_worker(
    settings: Settings,
    engine: EscrowEngine,
    metrics: Metrics | None = None,
    *,
    interval: float | None = None,
    batch_size: int | None = None,
) -> Worker:
    def dispatcher(worker_id: str) -> Dispatcher:
        return Dispatcher(
            engine,
            worker_id,
            retry=settings.webhook_retry(),
            timeout=settings.webhook_timeout,
            lease=settings.worker_lease,
            on_failure=metrics.observe_webhook_failure if metrics else None,
            allow_private=settings.webhook_allow_private,
        )

    return Worker(
        engine,
        interval=interval or settings.worker_interval,
        batch_size=batch_size or settings.worker_batch_size,
        lease=settings.worker_lease,
        max_clock_skew=settings.max_clock_skew,
        dispatcher=dispatcher,
        on_report=metrics.observe_sweep if metrics else None,
    )
