"""The API's typed rows: each table a response shows, as a pydantic model read off the
storage model that declares the table (so a column added there is in the document too),
with the API's own types: timestamps as ISO 8601 strings (`format: date-time`), dates as
`YYYY-MM-DD`, states and currencies as their enums, ids always present.

A generated client gets one class per collection (`Contract`, `Milestone`, ...), its
page (`ContractPage`, ...), and, for `GET /v1/contracts/{id}` and its siblings, the
entity with typed `fields` (`ContractOut`, ...).
"""

from __future__ import annotations

from datetime import date, datetime
from types import NoneType, UnionType
from typing import TYPE_CHECKING, Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, create_model
from sqlmodel import SQLModel

from escrowflow.schemas import (
    DeadlineOut,
    EntityOut,
    EscrowOut,
    LedgerOut,
    NextOut,
    SubscriptionOut,
    Terms,
    TermsPlan,
    TransitionOut,
)
from escrowflow.vocabulary import (
    Currency,
    EntityName,
    OptionalTimestamp,
    StateName,
    Timestamp,
)
from storage.models import approvals, bulk, lifecycles, records

Day = Annotated[str, WithJsonSchema({"type": "string", "format": "date"})]
OptionalDay = Annotated[
    str | None, WithJsonSchema({"anyOf": [{"type": "string", "format": "date"}, {"type": "null"}]})
]
_NAMED: dict[str, Any] = {"state": StateName, "currency": Currency}


def _api_type(name: str, annotation: Any) -> Any:
    """The type a column has in the API's answers."""
    optional = get_origin(annotation) in (Union, UnionType) and NoneType in get_args(annotation)
    inner = next((a for a in get_args(annotation) if a is not NoneType), annotation)
    if name == "id":
        return int
    if name in _NAMED:
        return _NAMED[name] | None if optional else _NAMED[name]
    if inner is datetime:
        return OptionalTimestamp if optional else Timestamp
    if inner is date:
        return OptionalDay if optional else Day
    return annotation


def row_model(
    name: str, table: type[SQLModel], doc: str, *, without: tuple[str, ...] = ()
) -> type[BaseModel]:
    """A model of `table`'s rows as the API answers them: every column but `without`."""
    fields: dict[str, Any] = {
        column: (_api_type(column, info.annotation), Field(description=info.description))
        for column, info in table.model_fields.items()
        if column not in without
    }
    made: type[BaseModel] = create_model(name, __doc__=doc, **fields)
    return made


def page_model(item: type[BaseModel]) -> type[BaseModel]:
    """`{items, next_cursor}` of `item`: pass `next_cursor` as `cursor` for the next page."""
    made: type[BaseModel] = create_model(
        f"{item.__name__}Page",
        __doc__=f"A page of {item.__name__} rows: pass `next_cursor` as `cursor` for the "
        "next; null on the last page.",
        items=(list[item], ...),  # type: ignore[valid-type]
        next_cursor=(str | None, ...),
    )
    return made


# The entities, as lists show them (every column) and as `fields` of their own page.
ROWS: dict[str, type[BaseModel]] = {
    "contract": row_model("Contract", lifecycles.Contract, "A contract, as lists show it."),
    "milestone": row_model("Milestone", lifecycles.Milestone, "A milestone of a contract."),
    "change_request": row_model(
        "ChangeRequest", lifecycles.ChangeRequest, "A change request on a milestone."
    ),
    "proposal": row_model("Proposal", lifecycles.Proposal, "A freelancer's proposal (FP1)."),
    "refund": row_model("Refund", lifecycles.Refund, "A refund request, and its outcome."),
}
PAGES: dict[str, type[BaseModel]] = {entity: page_model(row) for entity, row in ROWS.items()}

Deadline = row_model("Deadline", records.Deadline, "A durable timer, as the deadline list shows.")
DeadlinePage = page_model(Deadline)
Approval = row_model("Approval", approvals.Approval, "A money decision (PA4).")
BulkItem = row_model("BulkItem", bulk.BulkActionItem, "A deadline a bulk action acts on.")

# What `show` puts beside `fields` (EntityOut's own members), so not in `fields` again.
_TOP = ("id", "state", "version", "contract_id", "terms_id")


def _proposal_fields() -> type[BaseModel]:
    base = row_model(
        "ProposalFieldsBase", lifecycles.Proposal, "A proposal's own fields.", without=_TOP
    )
    made: type[BaseModel] = create_model(
        "ProposalFields",
        __base__=base,
        __doc__="A proposal's own fields, and what the client is asked to accept (FP2).",
        items=(list[dict[str, Any]], Field(description="Each change, described (FP2).")),
    )
    return made


FIELDS: dict[str, type[BaseModel]] = {
    "contract": row_model(
        "ContractFields", lifecycles.Contract, "A contract's own fields.", without=_TOP
    ),
    "milestone": row_model(
        "MilestoneFields", lifecycles.Milestone, "A milestone's own fields.", without=_TOP
    ),
    "change_request": row_model(
        "ChangeRequestFields", lifecycles.ChangeRequest, "Its own fields.", without=_TOP
    ),
    "proposal": _proposal_fields(),
    "refund": row_model("RefundFields", lifecycles.Refund, "Its own fields.", without=_TOP),
}


def _entity_out(entity: str, fields: type[BaseModel]) -> type[BaseModel]:
    name = "".join(part.capitalize() for part in entity.split("_"))
    made: type[BaseModel] = create_model(
        f"{name}Out",
        __base__=EntityOut,
        __doc__=f"A {entity.replace('_', ' ')}: state, version, what may happen, its fields.",
        fields=(fields, ...),
    )
    return made


SHOWN: dict[str, type[BaseModel]] = {
    entity: _entity_out(entity, fields) for entity, fields in FIELDS.items()
}


# The dynamic models under names a type checker takes as classes (mypy cannot follow
# `create_model`; at run time they are the models made above).
if TYPE_CHECKING:
    ContractRow = BaseModel
    MilestoneRow = BaseModel
    ChangeRequestRow = BaseModel
    ProposalRow = BaseModel
    RefundRow = BaseModel
    DeadlineRow = BaseModel
    ApprovalRow = BaseModel
    BulkItemRow = BaseModel
    BulkActionRow = BaseModel
else:
    ContractRow, MilestoneRow, ChangeRequestRow, ProposalRow, RefundRow = ROWS.values()
    DeadlineRow, ApprovalRow, BulkItemRow = Deadline, Approval, BulkItem
    BulkActionRow = row_model("BulkActionRow", bulk.BulkAction, "A bulk action's row.")


# -- answers made of several reads ----------------------------------------------------


class Page(BaseModel):
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end."
    )


class ApprovalShown(ApprovalRow):
    """A money decision (PA4), with what it moves as people read it."""

    shown: str = Field(description="The amount as people read it, e.g. 1,200.00 EUR.")


class ApprovalPage(Page):
    """Money decisions, newest first (every one of the status asked for: one page)."""

    items: list[ApprovalShown]


class Progress(BaseModel):
    done: int
    total: int


class BulkApproval(BaseModel):
    """PA4: the bulk action waits for a second admin."""

    id: int
    status: str
    proposed_by: str
    shown: str


class BulkOut(BulkActionRow):
    """A bulk action on deadlines (DL4): its preview, its progress, a sample of its items."""

    results: dict[str, int] = Field(description="Items per result so far (done, skipped...).")
    progress: Progress
    approval: BulkApproval | None
    sample: list[BulkItemRow]


class DecisionOut(BaseModel):
    """A decision taken on an approval (PA4): the approval as it now stands, and what
    happened: the entity's transition, or the bulk action started."""

    approval: ApprovalShown
    transition: TransitionOut | None = None
    bulk: BulkOut | None = None


class ForecastRow(BaseModel):
    """Money that moves by itself: to freelancers (MS10 auto-approvals) and back to
    clients (RF2 default refunds), minor units, with how many deadlines move it."""

    currency: Currency
    to_freelancers: int
    releases: int
    to_clients: int
    refunds: int


class ForecastDay(ForecastRow):
    """What moves on one UTC day, in one currency."""

    date: Day


class ForecastOut(BaseModel):
    """What moves by itself between `from` and `until` if nobody acts."""

    model_config = ConfigDict(populate_by_name=True)
    from_: Timestamp = Field(alias="from")
    until: Timestamp
    by_day: list[ForecastDay]
    totals: list[ForecastRow]
    paused: list[ForecastRow] = Field(description="Paused deadlines: they move nothing yet.")


class ContractView(ContractRow):
    """A contract as its dossier shows it: its row and what its page adds."""

    entity: EntityName
    allowed_events: dict[str, list[str]] = Field(description="Per role: what it may fire.")
    pending_deadlines: list[DeadlineOut]
    parties: dict[str, str]
    contract_escrow: EscrowOut


class LedgerRow(LedgerOut):
    balance: int = Field(description="What the contract holds after this entry.")


class TimelineRow(BaseModel):
    """One moment of a contract's life: a transition, a ledger move or a deadline."""

    at: Timestamp
    kind: str = Field(description="history, ledger, or 'deadline STATUS'.")
    entity: EntityName
    entity_id: int
    event: str
    from_state: str | None
    to_state: str | None
    who: str | None = Field(description="role:party, for a transition.")
    amount: int | None
    currency: Currency
    details: dict[str, Any]


class Others(BaseModel):
    change_request: list[ChangeRequestRow]
    proposal: list[ProposalRow]
    refund: list[RefundRow]


class DossierOut(BaseModel):
    """Everything about one contract, for arbitration and audits."""

    contract: ContractView
    terms: Terms | None
    milestones: list[MilestoneRow]
    others: Others
    timeline: list[TimelineRow]
    ledger: list[LedgerRow]
    deadlines: list[DeadlineRow]


class NextPage(Page):
    """What happens next, per pending deadline (one page: a contract has few)."""

    items: list[NextOut]


class TermsPage(Page):
    """Every terms version, oldest first (one page)."""

    items: list[Terms]


class TermsPlanPage(Page):
    """The newest terms migration plans, without their moves (one page)."""

    items: list[TermsPlan]


class SubscriptionPage(Page):
    """Webhook subscriptions (one page)."""

    items: list[SubscriptionOut]


class Readiness(BaseModel):
    status: str = Field(
        description="ready, or why not: database_unavailable, not_migrated, clock_skew."
    )
    detail: str | None = None
    clock_skew_seconds: float | None = Field(
        default=None, description="This host's clock minus the database's (DL2)."
    )
    database: dict[str, str | int] | None = Field(
        default=None,
        description="The server this process reaches now: `host` (or `file`) and, on "
        "PostgreSQL, `timeline` (a promoted standby starts a new one: a switch).",
    )
