"""The one retry strategy: exponential backoff with a cap, and when to give up.

Used for deadlines whose firing raised (retried until they fire: a timer never gives
up) and for webhook deliveries (dead-lettered after `max_attempts`). The defaults are
named here, once; settings and the dispatcher read them from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class RetryStrategy:
    """Wait `base`, then twice as long after each failed attempt, at most `cap`."""

    base: timedelta
    cap: timedelta
    max_attempts: int | None = None  # None: never give up

    def wait(self, attempts: int) -> timedelta:
        """How long to wait after failed attempt number `attempts` (1, 2, ...)."""
        wait: timedelta = self.base * 2 ** (attempts - 1)
        return min(wait, self.cap)

    def gives_up(self, attempts: int) -> bool:
        """Whether `attempts` failed attempts are the last ones."""
        return self.max_attempts is not None and attempts >= self.max_attempts


# A deadline that failed to fire: 2 s, 4 s, 8 s ... at most an hour, forever.
DEADLINE_RETRY = RetryStrategy(base=timedelta(seconds=2), cap=timedelta(hours=1))
# A webhook delivery: 10 s, 20 s ... at most 6 h; dead-lettered after 12 attempts.
WEBHOOK_MAX_ATTEMPTS = 12
WEBHOOK_RETRY = RetryStrategy(
    base=timedelta(seconds=10), cap=timedelta(hours=6), max_attempts=WEBHOOK_MAX_ATTEMPTS
)
