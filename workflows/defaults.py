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
BULK_CHUNK = 250
"""Items of a bulk action on deadlines (DL4) applied in one transaction: the longest any
contract lock it takes is held."""
BULK_THREADS = 4
"""Chunks of a bulk action applied at once."""
BULK_PAGE = 20 * BULK_CHUNK
"""Items read at a time by a bulk action's runner; its lease is renewed after each page."""
WEBHOOK_TIMEOUT_SECONDS = 10.0
"""The overall deadline of one webhook request (connect, send, the whole answer)."""
WEBHOOK_BATCH_SIZE = 100
"""Webhook deliveries claimed per dispatch."""
