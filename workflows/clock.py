"""Time is injected: the engine asks a Clock, tests move a ManualClock."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

DEFAULT_MAX_CLOCK_SKEW = timedelta(seconds=5)
"""DL2: a process clock further than this from the deployment's is reported as an error."""


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that only moves when told to: 14 days pass in a microsecond."""

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
        if start.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start time")
        self._now = start.astimezone(UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> datetime:
        if delta < timedelta(0):
            raise ValueError("time does not run backwards")
        with self._lock:
            self._now += delta
            return self._now

    def set(self, when: datetime) -> None:
        with self._lock:
            self._now = when.astimezone(UTC)


class FileClock:
    """Test-only: the time written in a file (ISO 8601), read at every call.

    Lets an end-to-end test move the clock of a server in another process without the
    server having an endpoint for it (ESCROWFLOW_TEST_CLOCK_FILE).
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def now(self) -> datetime:
        try:
            moment = datetime.fromisoformat(self.path.read_text().strip())
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"test clock file {self.path} has no ISO 8601 time: {exc}") from exc
        if moment.tzinfo is None:
            raise RuntimeError(f"test clock file {self.path}: the time needs a UTC offset")
        return moment.astimezone(UTC)


class SkewedClock:
    """Test-only: another clock shifted by `skew`, standing for a host whose own clock is
    wrong (ESCROWFLOW_TEST_CLOCK_SKEW). Only the skew measurement ever reads it (DL2)."""

    def __init__(self, base: Clock, skew: timedelta) -> None:
        self.base = base
        self.skew = skew

    def now(self) -> datetime:
        return self.base.now() + self.skew


def skew_of(deployment: Clock, process: Clock) -> timedelta:
    """How far this process's own clock is from the deployment's (positive: ahead).

    A clock that measures it itself (the database server's) says; otherwise the two are
    read one after the other."""
    if deployment is process:  # one host, one clock (SQLite)
        return timedelta(0)
    measure = getattr(deployment, "measure_skew", None)
    if measure is not None:
        skew: timedelta = measure()
        return skew
    return process.now() - deployment.now()
