"""The tables that record and drive the lifecycles: history, ledger, deadlines,
outbox and feed, workers, API tokens, webhooks, idempotency keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from storage.models.columns import Leased, one_of, partial, pending_only, when


class History(SQLModel, table=True):
    """Append-only: one row per transition, with who caused it, when and why (PA3)."""

    __tablename__ = "history"
    __table_args__ = (
        one_of("ck_history_cause", "cause", "request", "timer"),
        sa.Index("ix_history_entity", "entity", "entity_id", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    contract_id: int = Field(foreign_key="contracts.id")
    entity: str = Field(max_length=20)
    entity_id: int
    event: str = Field(max_length=40)
    from_state: str | None = Field(default=None, max_length=40)
    to_state: str = Field(max_length=40)
    version: int
    actor_role: str = Field(max_length=20)
    actor_party: str = Field(max_length=100)
    cause: str = Field(max_length=10)
    # The transition this one followed from, when one event moved several entities.
    caused_by: int | None = Field(default=None, foreign_key="history.id")
    deadline_id: int | None = None
    due_at: datetime | None = when(default=None)
    at: datetime = when()
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)


class LedgerEntry(SQLModel, table=True):
    """Append-only escrow ledger: every deposit, release and refund (ES1)."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        one_of("ck_ledger_kind", "kind", "deposit", "release", "refund"),
        sa.CheckConstraint("amount > 0", name="ck_ledger_amount_positive"),
    )

    id: int | None = Field(default=None, primary_key=True)
    contract_id: int = Field(foreign_key="contracts.id", index=True)
    milestone_id: int | None = Field(default=None, foreign_key="milestones.id")
    refund_id: int | None = Field(default=None, foreign_key="refunds.id")
    history_id: int = Field(foreign_key="history.id")
    kind: str = Field(max_length=10)
    amount: int = Field(sa_type=sa.BigInteger)
    currency: str = Field(max_length=3)
    at: datetime = when()


class Deadline(Leased, table=True):
    """A durable timer: fire `event` on the entity if it still has `state_version`."""

    __tablename__ = "deadlines"
    __table_args__ = (
        one_of("ck_deadlines_status", "status", "pending", "fired", "cancelled", "stale"),
        # The sweep's work list, in its claim order (due_at, id: a claim walks it and
        # stops at its batch); its other columns let the forecast read the index alone
        # (what falls due when, and what it moves).
        sa.Index(
            "ix_deadlines_due_pending",
            "due_at",
            "id",
            "event",
            "paused",
            "currency",
            "amount",
            **pending_only("status", "pending"),
        ),
        # Failed firings waiting for their retry: few rows, found without a scan.
        sa.Index(
            "ix_deadlines_retry_pending",
            "next_attempt_at",
            sqlite_where=sa.text("status = 'pending' AND next_attempt_at IS NOT NULL"),
            postgresql_where=sa.text("status = 'pending' AND next_attempt_at IS NOT NULL"),
        ),
        # A contract's pending deadlines (search's "waiting on a timer", its dossier).
        sa.Index(
            "ix_deadlines_contract_pending",
            "contract_id",
            "due_at",
            **partial("status = 'pending'"),
        ),
        # The few an admin paused or whose firing failed for good (DL1, DL3).
        sa.Index(
            "ix_deadlines_held_back",
            "contract_id",
            **partial("status = 'pending' AND (paused OR failed_at IS NOT NULL)"),
        ),
        sa.Index(
            "uq_deadlines_one_pending_per_entity_event",
            "entity",
            "entity_id",
            "event",
            unique=True,
            **pending_only("status", "pending"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    contract_id: int = Field(foreign_key="contracts.id")
    entity: str = Field(max_length=20)
    entity_id: int
    event: str = Field(max_length=40)
    due_at: datetime = when()
    state_version: int
    status: str = Field(default="pending", max_length=10)
    created_at: datetime = when()
    closed_at: datetime | None = when(default=None)
    history_id: int | None = Field(default=None, foreign_key="history.id")
    # An admin paused it: sweeps skip it until it is resumed.
    paused: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    # DL1: when, by whom, and the time it had left then (milliseconds); a resume makes it
    # due that long after the resume.
    paused_at: datetime | None = when(default=None)
    paused_by: str | None = Field(default=None, max_length=100)
    paused_left_ms: int | None = Field(default=None, sa_type=sa.BigInteger)
    # A failed firing is retried, with backoff, from this time on.
    next_attempt_at: datetime | None = when(default=None)
    # What it moves if it fires now (MS10: an auto-approval's release; RF2: a default
    # refund), kept up to date with its entity, so the forecast reads this table alone.
    amount: int | None = Field(default=None, sa_type=sa.BigInteger)
    currency: str | None = Field(default=None, max_length=3)
    # A sweep found its contract locked by another connection at this time and went on
    # without it; it fires on a later sweep (status and the console show it waiting).
    blocked_since: datetime | None = when(default=None)
    # DL3: its firing failed for a reason retrying cannot mend, attempt after attempt;
    # sweeps skip it from this time on (like a pause) until an admin retries it.
    failed_at: datetime | None = when(default=None)


class Worker(SQLModel, table=True):
    """A daemon's heartbeat: what `escrowflow status` shows."""

    __tablename__ = "workers"

    id: str = Field(primary_key=True, max_length=100)
    host: str = Field(max_length=200)
    pid: int
    interval_seconds: float
    started_at: datetime = when()
    last_seen_at: datetime = when()
    last_sweep_at: datetime | None = when(default=None)
    fired: int = 0
    stale: int = 0
    failed: int = 0
    stopped_at: datetime | None = when(default=None)
    # DL2: this host's clock minus the database's at the last heartbeat, in seconds.
    clock_skew_seconds: float | None = None


class OutboxEvent(SQLModel, table=True):
    """One event per transition, written in its transaction, for other services (NT1)."""

    __tablename__ = "outbox_events"
    __table_args__ = (
        sa.Index(
            "ux_outbox_events_position", "position", unique=True, **partial("position IS NOT NULL")
        ),
        # The relay's work list: small, as rows leave it once sequenced.
        sa.Index("ix_outbox_events_unsequenced", "id", **partial("position IS NULL")),
    )

    id: int | None = Field(default=None, primary_key=True)
    # A random UUID: stable, so consumers can dedupe. Not indexed: every index is
    # one more B-tree page written by every transition.
    event_id: str = Field(max_length=36)
    contract_id: int = Field(foreign_key="contracts.id")
    history_id: int = Field(foreign_key="history.id")
    type: str = Field(max_length=80)
    entity: str = Field(max_length=20)
    entity_id: int
    recipients: list[str] = Field(default_factory=list, sa_type=sa.JSON)
    at: datetime = when()
    data: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)
    # Its place in the event feed. Ids are handed out at insert, so a transaction can
    # commit a lower id after a reader has seen a higher one; positions are given after
    # commit, by one relay at a time (workflows.feed), so a feed cursor never skips one.
    position: int | None = None


class FeedState(SQLModel, table=True):
    """The one row the relay locks: the last feed position it gave out."""

    __tablename__ = "feed_state"

    id: int = Field(primary_key=True)
    last_position: int = 0


class ApiToken(SQLModel, table=True):
    """A bearer token of a calling service. Only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: int | None = Field(default=None, primary_key=True)
    service: str = Field(max_length=100)
    scopes: list[str] = Field(default_factory=list, sa_type=sa.JSON)
    token_hash: str = Field(max_length=64, unique=True)
    # The token's first characters, so that a person can tell tokens apart in a list.
    prefix: str = Field(max_length=16)
    created_at: datetime = when()
    revoked_at: datetime | None = when(default=None)


class WebhookSubscription(SQLModel, table=True):
    """Where to POST events, signed with `secret`; `event_types` empty means all."""

    __tablename__ = "webhook_subscriptions"

    id: int | None = Field(default=None, primary_key=True)
    url: str = Field(max_length=2000)
    # Kept in clear: signing needs it. Shown once, at creation.
    secret: str = Field(max_length=200)
    event_types: list[str] = Field(default_factory=list, sa_type=sa.JSON)
    description: str = Field(default="", max_length=500)
    created_at: datetime = when()
    removed_at: datetime | None = when(default=None)


class WebhookDelivery(Leased, table=True):
    """One event owed to one subscription, until delivered or dead-lettered."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        one_of("ck_webhook_deliveries_status", "status", "pending", "delivered", "dead"),
        sa.UniqueConstraint("subscription_id", "event_id", name="uq_webhook_deliveries_event"),
        sa.Index("ix_webhook_deliveries_due", "next_attempt_at", **partial("status = 'pending'")),
    )

    id: int | None = Field(default=None, primary_key=True)
    subscription_id: int = Field(foreign_key="webhook_subscriptions.id")
    event_id: int = Field(foreign_key="outbox_events.id")
    status: str = Field(default="pending", max_length=20)
    next_attempt_at: datetime = when()
    last_status_code: int | None = None
    created_at: datetime = when()
    delivered_at: datetime | None = when(default=None)


IDEMPOTENCY_KEY_LENGTH = 200
"""The longest stored key (a service's name, a colon and its key; longer ones are
stored as their SHA-256)."""


class IdempotencyRecord(SQLModel, table=True):
    """A used Idempotency-Key, its request's fingerprint and its result. Never expires."""

    __tablename__ = "idempotency_keys"

    key: str = Field(primary_key=True, max_length=IDEMPOTENCY_KEY_LENGTH)
    fingerprint: str = Field(max_length=64)
    result: dict[str, Any] = Field(sa_type=sa.JSON)
    created_at: datetime = when()
