"""Money decisions waiting for a second admin (PA4)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from storage.models.columns import one_of, pending_only, when


class Approval(SQLModel, table=True):
    """An admin's decision that moves money above the threshold (an event such as a
    dispute resolution, or applying a bulk retry), proposed and not yet in effect: a
    second, different admin approves it (it then happens) or rejects it."""

    __tablename__ = "approvals"
    __table_args__ = (
        one_of("ck_approvals_status", "status", "pending", "approved", "rejected", "stale"),
        # One decision waits per entity at a time.
        sa.Index(
            "uq_approvals_one_pending_per_entity",
            "entity",
            "entity_id",
            unique=True,
            **pending_only("status", "pending"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    # The contract it decides on (none for a bulk action, which spans many).
    contract_id: int | None = Field(default=None, foreign_key="contracts.id", index=True)
    entity: str = Field(max_length=20)
    entity_id: int
    event: str = Field(max_length=40)
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)
    # The entity's version when proposed: approved against another, it is stale.
    entity_version: int
    amount: int = Field(sa_type=sa.BigInteger)  # what it moves, minor units
    currency: str = Field(max_length=3)
    status: str = Field(default="pending", max_length=10)
    proposed_by: str = Field(max_length=100)
    proposed_at: datetime = when()
    reason: str | None = Field(default=None, max_length=500)
    decided_by: str | None = Field(default=None, max_length=100)
    decided_at: datetime | None = when(default=None)
    decision_reason: str | None = Field(default=None, max_length=500)
