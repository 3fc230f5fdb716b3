"""Bulk actions on deadlines (DL4): a previewed selection, then its items applied by a
background job, each with its result."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from storage.models.columns import one_of, when


class BulkAction(SQLModel, table=True):
    """A pause, resume, extend or retry of many deadlines, previewed before it runs."""

    __tablename__ = "bulk_actions"
    __table_args__ = (
        one_of("ck_bulk_actions_action", "action", "pause", "resume", "extend", "retry"),
        one_of("ck_bulk_actions_status", "status", "previewed", "running", "done"),
    )

    id: int | None = Field(default=None, primary_key=True)
    action: str = Field(max_length=10)
    extend_ms: int | None = Field(default=None, sa_type=sa.BigInteger)
    selection: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)
    status: str = Field(default="previewed", max_length=10)
    created_at: datetime = when()
    created_by: str = Field(max_length=100)
    valid_until: datetime = when()
    deadlines: int = 0
    contracts: int = 0
    # Money the selected deadlines would move, per currency and per UTC day (minor units).
    money: list[dict[str, Any]] = Field(default_factory=list, sa_type=sa.JSON)
    undoes: int | None = Field(default=None, foreign_key="bulk_actions.id")
    reason: str | None = Field(default=None, max_length=500)
    applied_by: str | None = Field(default=None, max_length=100)
    applied_at: datetime | None = when(default=None)
    # A running action's runner (a worker's id, or the CLI's) holds it until `lease_until`
    # (the database's clock, DL2); a lapsed lease lets another take it over and resume.
    started_at: datetime | None = when(default=None)
    runner: str | None = Field(default=None, max_length=100)
    lease_until: datetime | None = when(default=None)


class BulkActionItem(SQLModel, table=True):
    """One deadline of a bulk action, as previewed; its result once applied."""

    __tablename__ = "bulk_action_items"
    __table_args__ = (one_of("ck_bulk_action_items_result", "result", "done", "skipped", "failed"),)

    bulk_id: int = Field(foreign_key="bulk_actions.id", primary_key=True)
    deadline_id: int = Field(foreign_key="deadlines.id", primary_key=True)
    contract_id: int
    event: str = Field(max_length=40)
    due_at: datetime = when()
    paused: bool = False
    amount: int | None = Field(default=None, sa_type=sa.BigInteger)
    currency: str | None = Field(default=None, max_length=3)
    result: str | None = Field(default=None, max_length=10)
    detail: str | None = Field(default=None, max_length=500)
    done_at: datetime | None = when(default=None)
