"""The daemon's defaults, named once: settings, the worker, the sweeper and the webhook
dispatcher all read them from here (the rules' own numbers live in `policy.py`, the
retry strategies' in `retry.py`, the bounded waits' in `storage/db.py`)."""

from __future__ import annotations

from datetime import timedelta

WORKER_INTERVAL_SECONDS = 1.0
"""Seconds between two sweeps when nothing is due sooner."""
BATCH_SIZE = 500
"""Deadlines claimed, and fired in one transaction, per batch."""
LEASE = timedelta(seconds=60)
"""How long a worker's claim lasts: a crashed worker's claims are taken over after it."""
WEBHOOK_TIMEOUT_SECONDS = 10.0
"""The overall deadline of one webhook request (connect, send, the whole answer)."""
WEBHOOK_BATCH_SIZE = 100
"""Webhook deliveries claimed per dispatch."""
