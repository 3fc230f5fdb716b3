"""SQLModel tables: the durable state of every lifecycle.

Storage knows nothing of machines; it stores states as strings. Invariants that a
database can hold are declared here too, so that a bug above cannot break them:
CHECK constraints on money (ES1, ES2), partial unique indexes for "one active milestone
per contract" (MS4) and "one pending change request per milestone" (CR1), and a partial
index over pending deadlines only, which keeps the sweep cheap however many have fired.

Money is always an integer number of minor units plus an ISO 4217 currency code.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use the engine's Clock")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _when(**kw: Any) -> Any:
    return Field(sa_type=UTCDateTime, **kw)


def _partial(condition: str) -> dict[str, Any]:
    """`WHERE condition` for a partial index on both backends."""
    clause = sa.text(condition)
    return {"sqlite_where": clause, "postgresql_where": clause}


def _pending_only(column: str, *values: str) -> dict[str, Any]:
    """`WHERE column IN (...)` for a partial index on both backends."""
    listed = ", ".join(f"'{v}'" for v in values)
    return _partial(f"{column} IN ({listed})")


class Contract(SQLModel, table=True):
    __tablename__ = "contracts"
    __table_args__ = (
        sa.CheckConstraint("kind IN ('fixed', 'hourly')", name="ck_contracts_kind"),
        sa.CheckConstraint(
            "deposited >= 0 AND released >= 0 AND refunded >= 0",
            name="ck_contracts_totals_non_negative",
        ),
        sa.CheckConstraint("held >= 0", name="ck_contracts_held_non_negative"),
        sa.CheckConstraint(
            "deposited = released + refunded + held", name="ck_contracts_ledger_balances"
        ),
        sa.CheckConstraint("credit >= 0 AND credit <= held", name="ck_contracts_credit_in_held"),
        sa.CheckConstraint("length(currency) = 3", name="ck_contracts_currency"),
    )

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=10)
    client_id: str = Field(max_length=100, index=True)
    freelancer_id: str = Field(max_length=100, index=True)
    title: str = Field(max_length=200)
    currency: str = Field(max_length=3)
    state: str = Field(max_length=40)
    version: int = 1
    # Running escrow totals, kept equal to the ledger's sums (ES1, ES2).
    deposited: int = Field(default=0, sa_type=sa.BigInteger)
    released: int = Field(default=0, sa_type=sa.BigInteger)
    refunded: int = Field(default=0, sa_type=sa.BigInteger)
    held: int = Field(default=0, sa_type=sa.BigInteger)
    # Held money earmarked for no milestone: the remainder of a partial release (MS9).
    credit: int = Field(default=0, sa_type=sa.BigInteger)
    # Counts every milestone ever created but deleted future ones (CT3).
    milestone_count: int = 0
    # Pointers that let the machines' guards decide without I/O.
    active_milestone_id: int | None = None
    open_proposal_id: int | None = None
    open_refund_id: int | None = None
    created_at: datetime = _when()
    updated_at: datetime = _when()


class Milestone(SQLModel, table=True):
    __tablename__ = "milestones"
    __table_args__ = (
        sa.CheckConstraint("amount > 0", name="ck_milestones_amount_positive"),
        sa.CheckConstraint("escrow >= 0", name="ck_milestones_escrow_non_negative"),
        sa.CheckConstraint("released_amount >= 0", name="ck_milestones_released_non_negative"),
        sa.Index(
            "uq_milestones_one_active_per_contract",
            "contract_id",
            unique=True,
            **_pending_only("state", "active", "in_review", "refund_requested"),
        ),
        sa.Index("ix_milestones_contract_position", "contract_id", "position"),
    )

    id: int | None = Field(default=None, primary_key=True)
    contract_id: int = Field(foreign_key="contracts.id")
    position: int
    title: str = Field(max_length=200)
    description: str = Field(default="", max_length=5000)
    due_date: date | None = None
    amount: int = Field(sa_type=sa.BigInteger)
    escrow: int = Field(default=0, sa_type=sa.BigInteger)
    released_amount: int = Field(default=0, sa_type=sa.BigInteger)
    open_change_request_id: int | None = None
    state: str = Field(max_length=40)
    version: int = 1
    created_at: datetime = _when()
    updated_at: datetime = _when()


class ChangeRequest(SQLModel, table=True):
    __tablename__ = "change_requests"
    __table_args__ = (
        sa.CheckConstraint("amount IS NULL OR amount > 0", name="ck_change_requests_amount"),
        sa.Index(
            "uq_change_requests_one_pending_per_milestone",
            "milestone_id",
            unique=True,
            **_pending_only("state", "pending"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    contract_id: int = Field(foreign_key="contracts.id", index=True)
    milestone_id: int = Field(foreign_key="milestones.id")
    title: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=5000)
    due_date: date | None = None
    amount: int | None = Field(default=None, sa_type=sa.BigInteger)
    state: str = Field(max_length=40)
    version: int = 1
    created_at: datetime = _when()
    updated_at: datetime = _when()


class Proposal(SQLModel, table=True):
    __tablename__ = "proposals"
    __table_args__ = (
        sa.Index(
            "uq_proposals_one_pending_per_contract",
            "contract_id",
            unique=True,
            **_pending_only("state", "pending"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    contract_id: int = Field(foreign_key="contracts.id")
    state: str = Field(max_length=40)
    version: int = 1
    created_at: datetime = _when()
    updated_at: datetime = _when()


class ProposalItem(SQLModel, table=True):
    __tablename__ = "proposal_items"
    __table_args__ = (
        sa.CheckConstraint("action IN ('add', 'edit', 'delete')", name="ck_proposal_items_action"),
        sa.CheckConstraint("amount IS NULL OR amount > 0", name="ck_proposal_items_amount"),
    )

    id: int | None = Field(default=None, primary_key=True)
    proposal_id: int = Field(foreign_key="proposals.id", index=True)
    ordinal: int
    action: str = Field(max_length=10)
    milestone_id: int | None = Field(default=None, foreign_key="milestones.id")
    title: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=5000)
    due_date: date | None = None
    amount: int | None = Field(default=None, sa_type=sa.BigInteger)
    # FP2: the milestone's values before the change (edit: the fields changed; delete:
    # all of them), as JSON, taken when proposed.
    before: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)


class Refund(SQLModel, table=True):
    __tablename__ = "refunds"
    __table_args__ = (
        sa.CheckConstraint("amount > 0", name="ck_refunds_amount_positive"),
        sa.CheckConstraint(
            "(to_client IS NULL AND to_freelancer IS NULL) OR "
            "(to_client >= 0 AND to_freelancer >= 0 AND to_client + to_freelancer = amount)",
            name="ck_refunds_split_sums",
        ),
        sa.Index(
            "uq_refunds_one_open_per_contract",
            "contract_id",
            unique=True,
            **_pending_only("state", "requested", "disputed"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    contract_id: int = Field(foreign_key="contracts.id")
    # The milestone whose escrow is at stake, or None for the contract's credit (MS9).
    milestone_id: int | None = Field(default=None, foreign_key="milestones.id")
    amount: int = Field(sa_type=sa.BigInteger)
    reason: str = Field(default="", max_length=2000)
    to_client: int | None = Field(default=None, sa_type=sa.BigInteger)
    to_freelancer: int | None = Field(default=None, sa_type=sa.BigInteger)
    state: str = Field(max_length=40)
    version: int = 1
    created_at: datetime = _when()
    updated_at: datetime = _when()


class History(SQLModel, table=True):
    """Append-only: one row per transition, with who caused it, when and why (PA3)."""

    __tablename__ = "history"
    __table_args__ = (
        sa.CheckConstraint("cause IN ('request', 'timer')", name="ck_history_cause"),
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
    due_at: datetime | None = _when(default=None)
    at: datetime = _when()
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)


class LedgerEntry(SQLModel, table=True):
    """Append-only escrow ledger: every deposit, release and refund (ES1)."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        sa.CheckConstraint("kind IN ('deposit', 'release', 'refund')", name="ck_ledger_kind"),
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
    at: datetime = _when()


class Deadline(SQLModel, table=True):
    """A durable timer: fire `event` on the entity if it still has `state_version`."""

    __tablename__ = "deadlines"
    __table_args__ = (
        sa.CheckConstraint(
            "status IN ('pending', 'fired', 'cancelled', 'stale')", name="ck_deadlines_status"
        ),
        sa.Index("ix_deadlines_due_pending", "due_at", **_pending_only("status", "pending")),
        # Failed firings waiting for their retry: few rows, found without a scan.
        sa.Index(
            "ix_deadlines_retry_pending",
            "next_attempt_at",
            sqlite_where=sa.text("status = 'pending' AND next_attempt_at IS NOT NULL"),
            postgresql_where=sa.text("status = 'pending' AND next_attempt_at IS NOT NULL"),
        ),
        sa.Index(
            "uq_deadlines_one_pending_per_entity_event",
            "entity",
            "entity_id",
            "event",
            unique=True,
            **_pending_only("status", "pending"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    contract_id: int = Field(foreign_key="contracts.id")
    entity: str = Field(max_length=20)
    entity_id: int
    event: str = Field(max_length=40)
    due_at: datetime = _when()
    state_version: int
    status: str = Field(default="pending", max_length=10)
    created_at: datetime = _when()
    closed_at: datetime | None = _when(default=None)
    history_id: int | None = Field(default=None, foreign_key="history.id")
    attempts: int = 0
    last_error: str | None = Field(default=None, max_length=2000)
    # An admin paused it: sweeps skip it until it is resumed.
    paused: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    # A failed firing is retried, with backoff, from this time on.
    next_attempt_at: datetime | None = _when(default=None)
    # A worker's claim on the deadline: others skip it until the lease runs out.
    claimed_by: str | None = Field(default=None, max_length=100)
    claim_expires_at: datetime | None = _when(default=None)


class Worker(SQLModel, table=True):
    """A daemon's heartbeat: what `escrowflow status` shows."""

    __tablename__ = "workers"

    id: str = Field(primary_key=True, max_length=100)
    host: str = Field(max_length=200)
    pid: int
    interval_seconds: float
    started_at: datetime = _when()
    last_seen_at: datetime = _when()
    last_sweep_at: datetime | None = _when(default=None)
    fired: int = 0
    stale: int = 0
    failed: int = 0
    stopped_at: datetime | None = _when(default=None)


class OutboxEvent(SQLModel, table=True):
    """One event per transition, written in its transaction, for other services (NT1)."""

    __tablename__ = "outbox_events"
    __table_args__ = (
        sa.Index(
            "ux_outbox_events_position", "position", unique=True, **_partial("position IS NOT NULL")
        ),
        # The relay's work list: small, as rows leave it once sequenced.
        sa.Index("ix_outbox_events_unsequenced", "id", **_partial("position IS NULL")),
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
    at: datetime = _when()
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
    created_at: datetime = _when()
    revoked_at: datetime | None = _when(default=None)


class WebhookSubscription(SQLModel, table=True):
    """Where to POST events, signed with `secret`; `event_types` empty means all."""

    __tablename__ = "webhook_subscriptions"

    id: int | None = Field(default=None, primary_key=True)
    url: str = Field(max_length=2000)
    # Kept in clear: signing needs it. Shown once, at creation.
    secret: str = Field(max_length=200)
    event_types: list[str] = Field(default_factory=list, sa_type=sa.JSON)
    description: str = Field(default="", max_length=500)
    created_at: datetime = _when()
    removed_at: datetime | None = _when(default=None)


class WebhookDelivery(SQLModel, table=True):
    """One event owed to one subscription, until delivered or dead-lettered."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        sa.CheckConstraint(
            "status IN ('pending', 'delivered', 'dead')", name="ck_webhook_deliveries_status"
        ),
        sa.UniqueConstraint("subscription_id", "event_id", name="uq_webhook_deliveries_event"),
        sa.Index("ix_webhook_deliveries_due", "next_attempt_at", **_partial("status = 'pending'")),
    )

    id: int | None = Field(default=None, primary_key=True)
    subscription_id: int = Field(foreign_key="webhook_subscriptions.id")
    event_id: int = Field(foreign_key="outbox_events.id")
    status: str = Field(default="pending", max_length=20)
    attempts: int = 0
    next_attempt_at: datetime = _when()
    last_error: str | None = Field(default=None, max_length=2000)
    last_status_code: int | None = None
    created_at: datetime = _when()
    delivered_at: datetime | None = _when(default=None)
    claimed_by: str | None = Field(default=None, max_length=100)
    claim_expires_at: datetime | None = _when(default=None)


class IdempotencyRecord(SQLModel, table=True):
    """A used Idempotency-Key, its request's fingerprint and its result. Never expires."""

    __tablename__ = "idempotency_keys"

    key: str = Field(primary_key=True, max_length=200)
    fingerprint: str = Field(max_length=64)
    result: dict[str, Any] = Field(sa_type=sa.JSON)
    created_at: datetime = _when()


metadata = SQLModel.metadata


def table(model: type[SQLModel]) -> sa.Table:
    """The Core table of a model, for the engine's hot path (no ORM session there)."""
    return cast(sa.Table, model.__table__)  # type: ignore[attr-defined]


CONTRACTS = table(Contract)
MILESTONES = table(Milestone)
CHANGE_REQUESTS = table(ChangeRequest)
PROPOSALS = table(Proposal)
PROPOSAL_ITEMS = table(ProposalItem)
REFUNDS = table(Refund)
HISTORY = table(History)
LEDGER = table(LedgerEntry)
DEADLINES = table(Deadline)
OUTBOX = table(OutboxEvent)
IDEMPOTENCY = table(IdempotencyRecord)
WORKERS = table(Worker)
FEED_STATE = table(FeedState)
API_TOKENS = table(ApiToken)
WEBHOOK_SUBSCRIPTIONS = table(WebhookSubscription)
WEBHOOK_DELIVERIES = table(WebhookDelivery)

TABLES: dict[str, sa.Table] = {
    "contract": CONTRACTS,
    "milestone": MILESTONES,
    "change_request": CHANGE_REQUESTS,
    "proposal": PROPOSALS,
    "refund": REFUNDS,
}
"""The tables of the entities that have a lifecycle, by entity name."""
