"""SQLModel tables: the durable state of every lifecycle.

Storage knows nothing of machines; it stores states as strings. Invariants that a
database can hold are declared here too, so that a bug above cannot break them:
CHECK constraints on money (ES1, ES2), partial unique indexes for "one active milestone
per contract" (MS4) and "one pending change request per milestone" (CR1), and a partial
index over pending deadlines only, which keeps the sweep cheap however many have fired.

Money is always an integer number of minor units plus an ISO 4217 currency code.

SQLModel is used to declare the tables, and only that: every query is SQLAlchemy Core
over the tables below (`CONTRACTS`, `DEADLINES`, ...), issued by the one module that
owns each table (docs/architecture.md). There is no ORM session anywhere; keep it so.
The table classes live in `lifecycles.py`, `records.py`, `terms.py` and `bulk.py`.
"""

from __future__ import annotations

from typing import cast

import sqlalchemy as sa
from sqlmodel import SQLModel

from storage.models.approvals import Approval
from storage.models.bulk import BulkAction, BulkActionItem
from storage.models.columns import UTCDateTime
from storage.models.lifecycles import (
    ChangeRequest,
    Contract,
    Milestone,
    Proposal,
    ProposalItem,
    Refund,
)
from storage.models.records import (
    ApiToken,
    Deadline,
    FeedState,
    History,
    IdempotencyRecord,
    LedgerEntry,
    OutboxEvent,
    WebhookDelivery,
    WebhookSubscription,
    Worker,
)
from storage.models.terms import Terms, TermsPlan, TermsPlanContract, TermsPlanDeadline

__all__ = [
    "ApiToken",
    "Approval",
    "BulkAction",
    "BulkActionItem",
    "ChangeRequest",
    "Contract",
    "Deadline",
    "FeedState",
    "History",
    "IdempotencyRecord",
    "LedgerEntry",
    "Milestone",
    "OutboxEvent",
    "Proposal",
    "ProposalItem",
    "Refund",
    "Terms",
    "TermsPlan",
    "TermsPlanContract",
    "TermsPlanDeadline",
    "UTCDateTime",
    "WebhookDelivery",
    "WebhookSubscription",
    "Worker",
    "metadata",
    "table",
]

metadata = SQLModel.metadata


def table(model: type[SQLModel]) -> sa.Table:
    """The Core table of a model: every query uses these (no ORM session anywhere)."""
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
TERMS = table(Terms)
BULK_ACTIONS = table(BulkAction)
BULK_ACTION_ITEMS = table(BulkActionItem)
TERMS_PLANS = table(TermsPlan)
TERMS_PLAN_CONTRACTS = table(TermsPlanContract)
TERMS_PLAN_DEADLINES = table(TermsPlanDeadline)
APPROVALS = table(Approval)

TABLES: dict[str, sa.Table] = {
    "contract": CONTRACTS,
    "milestone": MILESTONES,
    "change_request": CHANGE_REQUESTS,
    "proposal": PROPOSALS,
    "refund": REFUNDS,
}
"""The tables of the entities that have a lifecycle, by entity name."""
