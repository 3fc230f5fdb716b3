"""The one retry strategy: exponential backoff with a cap, and when to give up.

Used for deadlines whose firing raised (DL3: a failure retrying cannot mend gives up
after `max_attempts` and the deadline is marked failed; storage unavailability and
lock or serialization conflicts are retried for ever) and for webhook deliveries
(dead-lettered after `max_attempts`). The defaults are named here, once; settings and
the dispatcher read them from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

_MAX_DOUBLINGS = 64  # 2**64 times any base is past any cap a timedelta can hold


@dataclass(frozen=True)
class RetryStrategy:
    """Wait `base`, then twice as long after each failed attempt, at most `cap`."""

    base: timedelta
    cap: timedelta
    max_attempts: int | None = None  # None: never give up

    def wait(self, attempts: int) -> timedelta:
        """How long to wait after failed attempt number `attempts` (1, 2, ...): never more
        than `cap`, whatever the count (the doubling is bounded before it is computed, so
        no count overflows a timedelta)."""
        doublings = max(0, min(attempts - 1, _MAX_DOUBLINGS))
        seconds = min(self.base.total_seconds() * 2.0**doublings, self.cap.total_seconds())
        return timedelta(seconds=seconds)

    def gives_up(self, attempts: int) -> bool:
        """Whether `attempts` failed attempts are the last ones."""
        return self.max_attempts is not None and attempts >= self.max_attempts


# A deadline that failed to fire: 2 s, 4 s, 8 s ... at most an hour; after 10 failures
# that retrying cannot mend it is failed (DL3), ~20 minutes after the first.
DEADLINE_MAX_ATTEMPTS = 10
DEADLINE_RETRY = RetryStrategy(
    base=timedelta(seconds=2), cap=timedelta(hours=1), max_attempts=DEADLINE_MAX_ATTEMPTS
)
# A sweep found a deadline's contract locked by another connection: tried again after.
LOCK_RETRY = timedelta(seconds=1)
# A webhook delivery: 10 s, 20 s ... at most 6 h; dead-lettered after 12 attempts.
WEBHOOK_MAX_ATTEMPTS = 12
WEBHOOK_RETRY = RetryStrategy(
    base=timedelta(seconds=10), cap=timedelta(hours=6), max_attempts=WEBHOOK_MAX_ATTEMPTS
)
