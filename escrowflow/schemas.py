"""The HTTP API's request and response bodies (they make its OpenAPI document).

Request bodies are strict: an amount must be a JSON integer of minor units (`5.0` and
`"5000"` are refused, never coerced) and unknown fields are refused. The engine then
applies the domain rules (minimum amounts, currencies, states) with its own codes.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, WithJsonSchema

from escrowflow.vocabulary import (
    CURRENCIES,
    Currency,
    EntityName,
    EventName,
    LedgerKind,
    OptionalTimestamp,
    RoleName,
    StateName,
    Timestamp,
)

_strict = ConfigDict(extra="forbid")


def example(value: dict[str, Any], *, strict: bool = False) -> ConfigDict:
    """A model's config with its OpenAPI example; `strict` (request bodies) refuses unknown
    fields."""
    config = ConfigDict(json_schema_extra={"examples": [value]})
    if strict:
        config["extra"] = "forbid"
    return config


Amount = StrictInt
Reason = StrictStr


class ErrorOut(BaseModel):
    code: str = Field(description="Stable and machine-readable, e.g. `amount_below_minimum`.")
    message: str = Field(description="What went wrong and how to fix it, for people.")
    details: dict[str, Any] = Field(default_factory=dict)
    request_id: str | None = Field(
        default=None, description="The request's id (X-Request-Id), as the logs name it."
    )

    model_config = example(
        {
            "code": "event_not_allowed_in_state",
            "message": "milestone 3 is released: release is not allowed there",
            "details": {"state": "released"},
        }
    )


class MilestoneIn(BaseModel):
    model_config = _strict
    title: StrictStr = Field(max_length=200)
    description: StrictStr | None = Field(default=None, max_length=5000)
    due_date: StrictStr | None = Field(default=None, description="YYYY-MM-DD", max_length=10)
    amount: Amount = Field(description="Minor units (cents): 50000 is 500.00 USD.")


class ContractCreate(BaseModel):
    model_config = example(
        {
            "freelancer_id": "ada",
            "title": "Landing page",
            "currency": "USD",
            "milestones": [{"title": "Design", "amount": 50000}],
        },
        strict=True,
    )
    freelancer_id: StrictStr = Field(max_length=100)
    title: StrictStr = Field(max_length=200)
    currency: Annotated[StrictStr, WithJsonSchema({"type": "string", "enum": CURRENCIES})] = Field(
        min_length=3, max_length=3, description="ISO 4217, e.g. USD"
    )
    kind: StrictStr = Field(default="fixed", description="fixed or hourly")
    milestones: list[MilestoneIn] | None = Field(default=None, max_length=1000)


class MilestonesCreate(BaseModel):
    model_config = example({"milestones": [{"title": "Build", "amount": 120000}]}, strict=True)
    milestones: list[MilestoneIn] = Field(min_length=1, max_length=1000)
    reason: Reason | None = Field(default=None, max_length=2000)


class MilestoneChange(BaseModel):
    """The fields to change; at least one."""

    model_config = example({"amount": 60000}, strict=True)
    title: StrictStr | None = Field(default=None, max_length=200)
    description: StrictStr | None = Field(default=None, max_length=5000)
    due_date: StrictStr | None = Field(default=None, max_length=10)
    amount: Amount | None = None
    reason: Reason | None = Field(default=None, max_length=2000)


class MilestoneOrder(BaseModel):
    model_config = example({"order": [3, 2]}, strict=True)
    order: list[StrictInt] = Field(min_length=1, max_length=1000)
    reason: Reason | None = Field(default=None, max_length=2000)


class ProposalItem(BaseModel):
    model_config = _strict
    action: StrictStr = Field(description="add, edit or delete")
    milestone_id: StrictInt | None = None
    title: StrictStr | None = Field(default=None, max_length=200)
    description: StrictStr | None = Field(default=None, max_length=5000)
    due_date: StrictStr | None = Field(default=None, max_length=10)
    amount: Amount | None = None


class ProposalCreate(BaseModel):
    model_config = example(
        {"items": [{"action": "add", "title": "Extra page", "amount": 30000}]}, strict=True
    )
    items: list[ProposalItem] = Field(min_length=1, max_length=1000)
    reason: Reason | None = Field(default=None, max_length=2000)


class RefundCreate(BaseModel):
    model_config = example({"reason": "the work stopped"}, strict=True)
    reason: Reason | None = Field(default=None, max_length=2000)


class CreatedRef(BaseModel):
    entity: EntityName
    id: int


class ApprovalRef(BaseModel):
    """PA4: the event waits for a second, different admin (`POST /v1/approvals/{id}/approve`)."""

    id: int
    status: str
    amount: int = Field(description="What it moves, in minor units of `currency`.")
    currency: Currency
    shown: str = Field(description="The amount as people read it, e.g. 1,200.00 EUR.")
    proposed_by: str


class TransitionOut(BaseModel):
    """What an event did: the entity's new state and version, and what it created."""

    model_config = example(
        {
            "entity": "milestone",
            "id": 1,
            "event": "release",
            "state": "released",
            "version": 4,
            "history_id": 12,
            "created": [],
            "replayed": False,
        }
    )
    entity: EntityName
    id: int
    event: EventName
    state: StateName
    version: int
    history_id: int | None
    created: list[CreatedRef]
    replayed: bool = Field(description="True when this answers a retry of an earlier request.")
    approval: ApprovalRef | None = Field(
        default=None,
        description="PA4: set when the event moves money above the threshold: it has not "
        "happened yet (202) and waits for a second admin.",
    )


class DeadlineOut(BaseModel):
    id: int
    event: str
    due_at: Timestamp


class EscrowOut(BaseModel):
    currency: Currency
    deposited: int
    released: int
    refunded: int
    held: int
    credit: int


class EntityOut(BaseModel):
    model_config = example(
        {
            "entity": "milestone",
            "id": 1,
            "contract_id": 1,
            "terms_id": 1,
            "state": "in_review",
            "version": 3,
            "fields": {"title": "Design", "amount": 50000, "escrow": 50000},
            "allowed_events": ["request_changes", "release"],
            "pending_deadlines": [
                {"id": 1, "event": "auto_approve", "due_at": "2026-01-19T09:00:00+00:00"}
            ],
            "escrow": {
                "currency": "USD",
                "deposited": 50000,
                "released": 0,
                "refunded": 0,
                "held": 50000,
                "credit": 0,
            },
        }
    )
    entity: EntityName
    id: int
    contract_id: int
    terms_id: int | None = Field(description="The terms its contract runs under (TM1).")
    state: StateName
    version: int
    fields: dict[str, Any]
    allowed_events: list[str] = Field(
        description="Events the caller may fire now, for the role it acts in "
        "(Escrowflow-Actor) or the roles its token allows; guards still apply."
    )
    pending_deadlines: list[DeadlineOut]
    escrow: EscrowOut = Field(description="The contract's escrow totals.")


class HistoryOut(BaseModel):
    id: int
    contract_id: int
    entity: str
    entity_id: int
    event: str
    from_state: str | None
    to_state: str
    version: int
    actor_role: RoleName
    actor_party: str
    cause: str = Field(description="request (a party asked) or timer (a deadline fired).")
    caused_by: int | None = Field(description="The transition this one followed from.")
    deadline_id: int | None
    due_at: OptionalTimestamp = Field(description="When the deadline that fired it was due.")
    at: Timestamp
    payload: dict[str, Any]


class LedgerOut(BaseModel):
    id: int
    contract_id: int
    milestone_id: int | None
    refund_id: int | None
    history_id: int
    kind: LedgerKind
    amount: int = Field(description="Minor units.")
    currency: Currency
    at: Timestamp


class MoneyOut(BaseModel):
    to: str
    amount: int
    currency: Currency
    stays_for_client: int = Field(
        0, description="MS10, MS9: what stays in escrow for the client (minor units)."
    )


class NextOut(BaseModel):
    deadline_id: int
    entity: EntityName
    entity_id: int
    event: str
    due_at: Timestamp
    paused: bool = Field(default=False, description="An admin paused it: it waits.")
    left: str | None = Field(
        default=None,
        description="DL1: a paused one's time left (ISO 8601); resumed, it falls due then.",
    )
    failed: bool = Field(
        default=False, description="DL3: its firing failed for good; it waits for a retry."
    )
    money: MoneyOut | None
    reminds: dict[str, str] | None = Field(
        default=None,
        description="A reminder (NT2): who is told (role, id), of which event, how long before.",
    )
    summary: str


class EventOut(BaseModel):
    id: str = Field(description="Stable UUID: deliveries of one event share it.")
    position: int = Field(description="Its place in the feed; ask for `after` it.")
    type: str = Field(description="ENTITY.EVENT, e.g. milestone.auto_approve.")
    entity: EntityName
    entity_id: int
    contract_id: int
    history_id: int
    at: Timestamp
    recipients: list[str]
    data: dict[str, Any]


class EventPage(BaseModel):
    """A page of the feed: pass `next_cursor` (the last position read) as `after` or
    `cursor` for the next; it is never null (the feed goes on)."""

    items: list[EventOut]
    next_cursor: str = Field(description='The feed position to read after, e.g. "42".')


class HistoryPage(BaseModel):
    """A page of an entity's history, oldest first; `next_cursor` null at the end."""

    items: list[HistoryOut]
    next_cursor: str | None


class LedgerPage(BaseModel):
    """A page of a contract's ledger, in the order written; `next_cursor` null at the end."""

    items: list[LedgerOut]
    next_cursor: str | None


class SubscriptionCreate(BaseModel):
    model_config = example(
        {"url": "https://payments.internal/escrow-events", "event_types": ["milestone.*"]},
        strict=True,
    )
    url: StrictStr = Field(max_length=2000)
    event_types: list[StrictStr] = Field(
        default_factory=list, max_length=100, description="ENTITY.EVENT patterns; [] = all."
    )
    description: StrictStr = Field(default="", max_length=500)


class SubscriptionOut(BaseModel):
    id: int
    url: str
    event_types: list[str]
    description: str
    created_at: Timestamp


class SubscriptionCreated(SubscriptionOut):
    secret: str = Field(description="Signs every delivery. Shown only now: keep it.")


class DeliveryOut(BaseModel):
    id: int
    subscription_id: int
    event_id: str
    type: str
    status: str
    attempts: int
    next_attempt_at: Timestamp
    last_error: str | None
    last_status_code: int | None
    delivered_at: OptionalTimestamp


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


class ReplayOut(BaseModel):
    replayed: int


class Health(BaseModel):
    status: str
    detail: str | None = None


class TermsSelection(BaseModel):
    """Which running contracts a terms migration moves: every field given must hold."""

    model_config = _strict
    terms_id: StrictInt | None = Field(default=None, description="Contracts under these terms.")
    client_id: StrictStr | None = Field(default=None, max_length=100)
    freelancer_id: StrictStr | None = Field(default=None, max_length=100)
    ids: list[StrictInt] | None = Field(default=None, max_length=10_000)
    states: list[StrictStr] | None = Field(default=None, max_length=10)


class TermsPlanCreate(BaseModel):
    model_config = example({"to_terms_id": 2, "selection": {"terms_id": 1}}, strict=True)
    to_terms_id: StrictInt = Field(description="The terms the contracts move to.")
    selection: TermsSelection = Field(default_factory=TermsSelection)


class TermsPlanApply(BaseModel):
    model_config = example({"reason": "review window shortened to 10 days"}, strict=True)
    reason: Reason = Field(max_length=500, description="Recorded in each contract's history.")


class Terms(BaseModel):
    """One immutable terms version (TM1)."""

    model_config = example(
        {
            "id": 1,
            "name": "2026-12-01-3fa9c2",
            "created_at": "2026-12-01T09:00:00+00:00",
            "created_by": "settings",
            "durations": {"review_window": "P14D"},
            "reminders": {"review_window": ["P3D", "P1D"]},
            "minimum_amounts": {"USD": 500},
            "max_milestones": 200,
            "contracts": 12,
        }
    )
    id: int
    name: str
    created_at: Timestamp
    created_by: str
    durations: dict[str, str]
    reminders: dict[str, list[str]]
    minimum_amounts: dict[str, int]
    max_milestones: int
    contracts: int


class TermsPlan(BaseModel):
    """A terms migration plan (TM2): what it moves, before and after."""

    id: int
    status: str = Field(description="planned, applying or applied")
    to_terms_id: int
    selection: dict[str, Any]
    created_at: Timestamp
    created_by: str
    valid_until: Timestamp
    contracts: int
    contracts_applied: int
    deadlines: int
    due_at_once: int
    forecast: list[dict[str, Any]] = Field(
        description="Money moved per UTC day and currency: change in minor units, shown."
    )
    reason: str | None
    applied_by: str | None
    applied_at: OptionalTimestamp
    moves: list[dict[str, Any]] | None = Field(
        description="A page of the deadlines it moves: due_before and due_after."
    )
    moves_after: int | None = Field(
        default=None, description="Pass as `moves_after` for the next page; None at the end."
    )
    moved: int | None = Field(default=None, description="Contracts this apply moved.")


class BulkPreviewCreate(BaseModel):
    """DL4: what to do to which deadlines; answered with a preview, nothing changes."""

    model_config = example(
        {"action": "pause", "selection": {"client_id": "acme", "events": ["auto_approve"]}},
        strict=True,
    )
    action: StrictStr = Field(description="pause, resume, extend or retry")
    selection: dict[str, Any] = Field(
        description="events, reminders, due_from, due_to, client_id, freelancer_id, ids, "
        "currency, amount_min, amount_max, states: every one given must hold"
    )
    extend_by: StrictStr | None = Field(
        default=None, max_length=40, description="extend: an ISO 8601 duration, e.g. P2D"
    )


class NoteIn(BaseModel):
    model_config = example({"text": "called the client: evidence by Friday"}, strict=True)
    text: StrictStr = Field(max_length=2000, description="Kept in the contract's history.")


class ApprovalDecision(BaseModel):
    model_config = example({"reason": "checked the evidence"}, strict=True)
    reason: Reason | None = Field(
        default=None, max_length=500, description="Why; required to reject."
    )


class BulkApply(BaseModel):
    model_config = example({"reason": "payment provider outage"}, strict=True)
    reason: Reason = Field(max_length=500, description="Recorded in each deadline's history.")
