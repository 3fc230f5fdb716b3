"""The tables of the entities that have a lifecycle: contracts, milestones, change
requests, proposals (and their items), refunds."""

from __future__ import annotations

from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field

from storage.models.columns import Lifecycle, MilestoneChange, one_of, pending_only


def search_indexes() -> list[sa.Index]:
    """PostgreSQL's indexes for a search ignoring case: a party id's prefix
    (`lower(id) LIKE 'ac%'`, pattern operators whatever the collation) and title words
    (`lower(title) LIKE '%logo%'`, trigrams from the pg_trgm extension)."""
    made = [
        sa.Index(f"ix_contracts_{column}_prefix", sa.text(f"lower({column}) varchar_pattern_ops"))
        for column in ("client_id", "freelancer_id")
    ]
    words = sa.Index(
        "ix_contracts_title_words", sa.text("lower(title) gin_trgm_ops"), postgresql_using="gin"
    )
    # pg_trgm ships with PostgreSQL (Debian's postgresql package) and is a trusted
    # extension: the database's owner may create it.
    create = sa.DDL("CREATE EXTENSION IF NOT EXISTS pg_trgm")  # type: ignore[no-untyped-call]
    trigrams = create.execute_if(dialect="postgresql")
    sa.event.listen(words, "before_create", trigrams)
    return [index.ddl_if(dialect="postgresql") for index in (*made, words)]


class Contract(Lifecycle, table=True):
    __tablename__ = "contracts"
    __table_args__ = (
        one_of("ck_contracts_kind", "kind", "fixed", "hourly"),
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
        # Search (storage.search): by state in id order, by money held in a currency; on
        # PostgreSQL also party-id prefixes and title words, ignoring case (pattern and
        # trigram indexes; SQLite scans, which stays quick at an embedded deployment's size).
        sa.Index("ix_contracts_state", "state", "id"),
        sa.Index("ix_contracts_currency_held", "currency", "held"),
        *search_indexes(),
    )

    kind: str = Field(max_length=10)
    client_id: str = Field(max_length=100, index=True)
    freelancer_id: str = Field(max_length=100, index=True)
    title: str = Field(max_length=200)
    currency: str = Field(max_length=3)
    # TM1: the terms it was offered under govern it for its whole life (None only for a
    # contract from before terms were recorded, until the first start gives it today's).
    terms_id: int | None = Field(default=None, foreign_key="terms.id", index=True)
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


class Milestone(Lifecycle, table=True):
    __tablename__ = "milestones"
    __table_args__ = (
        sa.CheckConstraint("amount > 0", name="ck_milestones_amount_positive"),
        sa.CheckConstraint("escrow >= 0", name="ck_milestones_escrow_non_negative"),
        sa.CheckConstraint("released_amount >= 0", name="ck_milestones_released_non_negative"),
        sa.Index(
            "uq_milestones_one_active_per_contract",
            "contract_id",
            unique=True,
            **pending_only("state", "active", "in_review", "refund_requested"),
        ),
        sa.Index("ix_milestones_contract_position", "contract_id", "position"),
    )

    contract_id: int = Field(foreign_key="contracts.id")
    position: int
    title: str = Field(max_length=200)
    description: str = Field(default="", max_length=5000)
    due_date: date | None = None
    amount: int = Field(sa_type=sa.BigInteger)
    escrow: int = Field(default=0, sa_type=sa.BigInteger)
    released_amount: int = Field(default=0, sa_type=sa.BigInteger)
    open_change_request_id: int | None = None


class ChangeRequest(Lifecycle, MilestoneChange, table=True):
    __tablename__ = "change_requests"
    __table_args__ = (
        sa.CheckConstraint("amount IS NULL OR amount > 0", name="ck_change_requests_amount"),
        sa.Index(
            "uq_change_requests_one_pending_per_milestone",
            "milestone_id",
            unique=True,
            **pending_only("state", "pending"),
        ),
    )

    contract_id: int = Field(foreign_key="contracts.id", index=True)
    milestone_id: int = Field(foreign_key="milestones.id")


class Proposal(Lifecycle, table=True):
    __tablename__ = "proposals"
    __table_args__ = (
        sa.Index(
            "uq_proposals_one_pending_per_contract",
            "contract_id",
            unique=True,
            **pending_only("state", "pending"),
        ),
    )

    contract_id: int = Field(foreign_key="contracts.id")


class ProposalItem(MilestoneChange, table=True):
    __tablename__ = "proposal_items"
    __table_args__ = (
        sa.CheckConstraint("amount IS NULL OR amount > 0", name="ck_proposal_items_amount"),
        one_of("ck_proposal_items_action", "action", "add", "edit", "delete"),
    )

    id: int | None = Field(default=None, primary_key=True)
    proposal_id: int = Field(foreign_key="proposals.id", index=True)
    ordinal: int
    action: str = Field(max_length=10)
    milestone_id: int | None = Field(default=None, foreign_key="milestones.id")
    # FP2: the milestone's values before the change (edit: the fields changed; delete:
    # all of them), as JSON, taken when proposed.
    before: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)


class Refund(Lifecycle, table=True):
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
            **pending_only("state", "requested", "disputed"),
        ),
    )

    contract_id: int = Field(foreign_key="contracts.id")
    # The milestone whose escrow is at stake, or None for the contract's credit (MS9).
    milestone_id: int | None = Field(default=None, foreign_key="milestones.id")
    amount: int = Field(sa_type=sa.BigInteger)
    reason: str = Field(default="", max_length=2000)
    to_client: int | None = Field(default=None, sa_type=sa.BigInteger)
    to_freelancer: int | None = Field(default=None, sa_type=sa.BigInteger)
