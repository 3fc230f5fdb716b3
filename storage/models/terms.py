"""The terms contracts run under (TM1) and the plans that move running contracts to
other terms (TM2)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from storage.models.columns import one_of, when


class Terms(SQLModel, table=True):
    """One immutable version of the rules' numbers (durations, reminders, minimums,
    limits). Never updated: changed settings make a new row."""

    __tablename__ = "terms"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, unique=True)
    # sha256 of the canonical JSON of `values`: the same numbers are the same terms.
    fingerprint: str = Field(max_length=64, unique=True)
    values: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)
    created_at: datetime = when()
    created_by: str = Field(max_length=100)


class TermsPlan(SQLModel, table=True):
    """A migration plan: which contracts move from which terms to `to_terms_id`, and
    their pending deadlines' due dates before and after; applied exactly as stored."""

    __tablename__ = "terms_plans"
    __table_args__ = (one_of("ck_terms_plans_status", "status", "planned", "applying", "applied"),)

    id: int | None = Field(default=None, primary_key=True)
    to_terms_id: int = Field(foreign_key="terms.id")
    selection: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)
    status: str = Field(default="planned", max_length=10)
    created_at: datetime = when()
    created_by: str = Field(max_length=100)
    valid_until: datetime = when()
    contracts: int = 0
    deadlines: int = 0
    due_at_once: int = 0
    # Money moved by the plan: [{"day", "currency", "change"}], minor units.
    forecast: list[dict[str, Any]] = Field(default_factory=list, sa_type=sa.JSON)
    reason: str | None = Field(default=None, max_length=500)
    applied_by: str | None = Field(default=None, max_length=100)
    applied_at: datetime | None = when(default=None)


class TermsPlanContract(SQLModel, table=True):
    """A contract a plan moves; `applied_at` once its move is committed (resumable)."""

    __tablename__ = "terms_plan_contracts"

    plan_id: int = Field(foreign_key="terms_plans.id", primary_key=True)
    contract_id: int = Field(foreign_key="contracts.id", primary_key=True)
    from_terms_id: int = Field(foreign_key="terms.id")
    applied_at: datetime | None = when(default=None)


class TermsPlanDeadline(SQLModel, table=True):
    """A pending deadline a plan moves, with its due date before and after."""

    __tablename__ = "terms_plan_deadlines"
    __table_args__ = (sa.Index("ix_terms_plan_deadlines_contract", "plan_id", "contract_id"),)

    plan_id: int = Field(foreign_key="terms_plans.id", primary_key=True)
    deadline_id: int = Field(foreign_key="deadlines.id", primary_key=True)
    contract_id: int
    entity: str = Field(max_length=20)
    entity_id: int
    event: str = Field(max_length=40)
    due_before: datetime = when()
    due_after: datetime = when()
    amount: int | None = Field(default=None, sa_type=sa.BigInteger)
    currency: str | None = Field(default=None, max_length=3)
