"""One typed settings object, read from ``ESCROWFLOW_*`` environment variables."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import Engine as DBEngine

from storage.db import (
    DEFAULT_LOCK_TIMEOUT_SECONDS,
    DEFAULT_POOL_SIZE,
    DEFAULT_POOL_TIMEOUT_SECONDS,
    database_shown,
    make_engine,
)
from storage.server_clock import server_clock
from workflows.clock import (
    DEFAULT_MAX_CLOCK_SKEW,
    Clock,
    FileClock,
    SkewedClock,
    SystemClock,
)
from workflows.defaults import BATCH_SIZE, LEASE, WEBHOOK_TIMEOUT_SECONDS, WORKER_INTERVAL_SECONDS
from workflows.engine import EscrowEngine
from workflows.policy import (
    DEFAULT_DURATIONS,
    DEFAULT_MAX_MILESTONES,
    DEFAULT_MINIMUM_AMOUNTS,
    DEFAULT_RELEASE_LIMIT_MULTIPLE,
    DEFAULT_REMINDERS,
    ISO_4217,
    SECOND_APPROVAL_ABOVE,
    TIMER_POLICIES,
    Policy,
)
from workflows.retry import (
    DEADLINE_MAX_ATTEMPTS,
    DEADLINE_RETRY,
    WEBHOOK_MAX_ATTEMPTS,
    WEBHOOK_RETRY,
    RetryStrategy,
)

DURATIONS = (
    "review_window",
    "change_request_lifetime",
    "refund_response_time",
    "worker_lease",
    "max_clock_skew",
    "webhook_backoff_base",
    "webhook_backoff_cap",
)
"""The settings that are durations: seconds or ISO 8601, and positive."""


class Settings(BaseSettings):
    """Everything configurable. Durations take seconds or ISO 8601 (``P14D``)."""

    model_config = SettingsConfigDict(env_prefix="ESCROWFLOW_", extra="ignore")

    database_url: str = "sqlite:///./escrowflow.db"
    # Pages that may be a few seconds stale read here (a PostgreSQL read replica): lists,
    # search, the forecast, the console's overviews. Never a decision.
    read_database_url: str | None = None
    # FULL: a committed release survives a power cut (WAL with NORMAL could lose it).
    sqlite_synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = "FULL"

    # The rules' numbers: defaults from workflows/policy.py, where they are defined once.
    review_window: timedelta = DEFAULT_DURATIONS["review_window"]  # MS10
    change_request_lifetime: timedelta = DEFAULT_DURATIONS["change_request_lifetime"]  # CR6
    refund_response_time: timedelta = DEFAULT_DURATIONS["refund_response_time"]  # RF2
    minimum_amounts: dict[str, int] = Field(
        default_factory=lambda: dict(DEFAULT_MINIMUM_AMOUNTS)
    )  # MS1
    max_milestones: int = Field(default=DEFAULT_MAX_MILESTONES, ge=1)  # CT3
    # MS14: a client's release above this multiple of the agreed amount needs "bonus".
    release_limit_multiple: int = Field(default=DEFAULT_RELEASE_LIMIT_MULTIPLE, ge=1, le=1000)
    # NT2: how long before each timer its party is reminded, by timer policy, as JSON
    # ({"review_window": ["P3D", "P1D"], ...}); `[]` or `{}` turns reminders off.
    reminders: dict[str, list[timedelta]] | list[timedelta] = Field(
        default_factory=lambda: {name: list(v) for name, v in DEFAULT_REMINDERS.items()}
    )

    # TM1: the name of the terms new offers get, when these numbers are new (a new
    # version is stored whenever they change; unset: named by date and fingerprint).
    terms_name: str | None = Field(default=None, min_length=1, max_length=100)

    # The daemon.
    worker_interval: float = Field(default=WORKER_INTERVAL_SECONDS, gt=0)
    worker_batch_size: int = Field(default=BATCH_SIZE, ge=1, le=10_000)
    worker_lease: timedelta = LEASE  # a crashed worker's claims expire

    # The HTTP API (`escrowflow serve`).
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    # Seconds a valid token is trusted without reading the database again; a revoked
    # token is refused at most this long after `escrowflow tokens revoke`.
    api_token_cache_seconds: float = Field(default=5.0, ge=0, le=300)
    # The API's writes run in a process of their own, beside the HTTP server's
    # (escrowflow/write_process.py); false keeps them on threads of its process.
    api_write_process: bool = True

    # Webhooks: attempts before a delivery is dead-lettered, and the first retry's wait
    # (doubling each time, at most webhook_backoff_cap).
    webhook_max_attempts: int = Field(default=WEBHOOK_MAX_ATTEMPTS, ge=1, le=100)
    webhook_backoff_base: timedelta = WEBHOOK_RETRY.base
    webhook_backoff_cap: timedelta = WEBHOOK_RETRY.cap
    webhook_timeout: float = Field(default=WEBHOOK_TIMEOUT_SECONDS, gt=0, le=120)
    # Largest request body accepted (413 beyond), checked before authentication.
    api_max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Webhooks may target loopback and private addresses: tests, internal deployments.
    webhook_allow_private: bool = False
    # The operator console (/console): how long a sign-in lasts, in seconds.
    console_session_seconds: int = Field(default=8 * 3600, ge=60, le=7 * 86400)

    # Bounded waits: a lock held elsewhere longer than this (seconds) answers 503
    # `database_busy` with Retry-After; no free pooled connection within pool_timeout
    # answers 503 `storage_busy` (PostgreSQL).
    lock_timeout: float = Field(default=DEFAULT_LOCK_TIMEOUT_SECONDS, gt=0, le=600)
    pool_timeout: float = Field(default=DEFAULT_POOL_TIMEOUT_SECONDS, gt=0, le=600)
    # Database connections a process keeps open (as many again for a burst).
    pool_size: int = Field(default=DEFAULT_POOL_SIZE, ge=1, le=1000)
    # PA4: an admin's decision moving more than this (major units of its currency) waits
    # for a second, different admin.
    second_approval_above: int = Field(default=SECOND_APPROVAL_ABOVE, ge=0, le=10**12)
    # DL3: failed firings (not storage or lock trouble) before a deadline is failed.
    deadline_max_attempts: int = Field(default=DEADLINE_MAX_ATTEMPTS, ge=1, le=1000)

    # DL2: a process whose own clock is further than this from the database's is
    # reported (an error line, /readyz not ready, status); it decides nothing by it.
    max_clock_skew: timedelta = DEFAULT_MAX_CLOCK_SKEW

    # Test-only: the deployment's "now" is read from this file (an ISO 8601 time), for
    # every process alike, instead of the database server's clock (SQLite: the host's),
    # so an end-to-end test can move real servers' time. There is no endpoint for it.
    test_clock_file: Path | None = None
    # Test-only: this process's own clock is this far off (e.g. P2D, -P3D), to show that
    # no decision uses it (DL2). It shifts the host clock, or the test clock file's time.
    test_clock_skew: timedelta | None = None

    @field_validator("minimum_amounts")
    @classmethod
    def _known_currencies(cls, value: dict[str, int]) -> dict[str, int]:
        for currency, amount in value.items():
            if currency not in ISO_4217:
                raise ValueError(f"{currency} is not an ISO 4217 currency code")
            if amount <= 0:
                raise ValueError(f"minimum amount for {currency} must be positive")
        return value

    @field_validator("reminders")
    @classmethod
    def _known_timers(
        cls, value: dict[str, list[timedelta]] | list[timedelta]
    ) -> dict[str, list[timedelta]]:
        if isinstance(value, list):
            if value:
                raise ValueError(
                    'give reminders by timer, e.g. {"review_window": ["P3D", "P1D"]}, '
                    "or [] to turn them off"
                )
            return {}
        for name, offsets in value.items():
            if name not in TIMER_POLICIES:
                raise ValueError(f"{name!r} is not a timer: use {', '.join(TIMER_POLICIES)}")
            if any(offset <= timedelta(0) for offset in offsets):
                raise ValueError(f"reminders before {name} must be positive durations")
        return value

    @field_validator(*DURATIONS, mode="before")
    @classmethod
    def _plain_seconds(cls, value: object) -> object:
        """`ESCROWFLOW_REVIEW_WINDOW=3600` means seconds, as `PT1H` would."""
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                return value
        return value

    @field_validator(*DURATIONS)
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be a positive duration")
        return value

    def webhook_retry(self) -> RetryStrategy:
        """How webhook deliveries are retried, from the settings."""
        return RetryStrategy(
            self.webhook_backoff_base, self.webhook_backoff_cap, self.webhook_max_attempts
        )

    def policy(self) -> Policy:
        return Policy(
            durations={
                "review_window": self.review_window,
                "change_request_lifetime": self.change_request_lifetime,
                "refund_response_time": self.refund_response_time,
            },
            minimum_amounts=dict(self.minimum_amounts),
            max_milestones=self.max_milestones,
            release_limit_multiple=self.release_limit_multiple,
            reminders={
                name: tuple(offsets)
                for name, offsets in (
                    self.reminders if isinstance(self.reminders, dict) else {}
                ).items()
            },
        )

    def database_shown(self) -> str:
        """The database as a person names it: a SQLite file's absolute path, a server's
        URL without its password."""
        return database_shown(self.database_url)

    def engine(self, *, create: bool = False, **engine_kwargs: Any) -> EscrowEngine:
        """The one factory of the escrow engine: the database, the policy and the clocks
        from these settings (`engine_kwargs` go to SQLAlchemy, e.g. `pool_size`). A SQLite
        file that is not there is refused (run `escrowflow migrate`) unless `create`: a
        command run from another directory must not make an empty database there."""
        engine_kwargs.setdefault("pool_timeout", self.pool_timeout)
        engine_kwargs.setdefault("pool_size", self.pool_size)
        db = make_engine(self, lock_timeout=self.lock_timeout, create=create, **engine_kwargs)
        if self.test_clock_file:
            logging.getLogger("escrowflow.clock").warning(
                "running on a test clock: now is read from %s, not the database's clock",
                self.test_clock_file,
                extra={"fields": {"event": "test_clock", "file": str(self.test_clock_file)}},
            )
        process = self.process_clock()
        clock = self.deployment_clock(db, process)
        reads = None
        if self.read_database_url:
            replica = self.model_copy(update={"database_url": self.read_database_url})
            reads = make_engine(replica, lock_timeout=self.lock_timeout, **engine_kwargs)
        return EscrowEngine(
            db,
            self.policy(),
            clock,
            process,
            self.deadline_retry(),
            terms_name=self.terms_name,
            second_approval_above=self.second_approval_above,
            reads=reads,
        )

    def deadline_retry(self) -> RetryStrategy:
        """How a failing deadline is retried (DL3), from the settings."""
        return replace(DEADLINE_RETRY, max_attempts=self.deadline_max_attempts)

    def process_clock(self) -> Clock:
        """This host's own clock (test: the clock file's time), with the test skew."""
        base: Clock = FileClock(self.test_clock_file) if self.test_clock_file else SystemClock()
        return SkewedClock(base, self.test_clock_skew) if self.test_clock_skew else base

    def deployment_clock(self, db: DBEngine, process: Clock) -> Clock:
        """The one clock that decides (DL2): the test clock file's if set (shared by every
        process of a test), the database server's on PostgreSQL, the host's on SQLite
        (one host)."""
        if self.test_clock_file:
            return FileClock(self.test_clock_file)
        return server_clock(db, process) or process
