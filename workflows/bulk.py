"""Bulk actions on deadlines (DL4): an incident freeze and its thaw.

An admin names deadlines by a selection (events, reminders or not, a due range, client,
freelancer, contract ids, currency, an amount range, state) and an action (pause,
resume, extend, retry). The preview is stored: how many deadlines and contracts, the
money they would move per currency and per UTC day, and every item as it was. Nothing
changes until it is applied, by its id with a reason. Applying first selects again: a
deadline that now matches and was not previewed refuses the apply, with the difference;
one previewed that fired, moved or changed since is reported (skipped), not acted on.
Applied, it is a running job that a worker carries out (or the CLI that applied it),
holding it by a lease: its items a chunk per transaction, through the same admin action
as one deadline (its history row names the bulk action); if anything in a chunk fails,
the chunk again one savepoint per item, so one failure harms no other. Each item's
result is kept with it, so an interrupted job resumes where it stopped. Undo is the inverse action
(pause and resume) previewed over the items a bulk action did.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.engine import Engine as DBEngine

from storage import approvals, bulk_actions, deadlines
from storage.errors import ConflictError, NotFound, ValidationError
from workflows import reminders, selections
from workflows.deadline_admin import ACTIONS, MAX_EXTENSION
from workflows.policy import ISO_4217, format_money

EVENTS = ("auto_approve", "expire", "refund_by_default")
STATES = ("pending", "paused", "failed")
CRITERIA = (
    "events",
    "reminders",
    "due_from",
    "due_to",
    "client_id",
    "freelancer_id",
    "ids",
    "currency",
    "amount_min",
    "amount_max",
    "states",
)
PREVIEW_LIFETIME = timedelta(hours=1)
"""A preview not applied within this time is refused: preview again."""
SAMPLE = 20
"""Items shown with a preview; the rest are read a page at a time."""
INVERSE = {"pause": "resume", "resume": "pause"}


def _moment(value: Any, field: str) -> datetime:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise selections.field_error(
                field, f"{field} is ISO 8601 with an offset, not {value!r}"
            ) from None
    else:
        raise selections.field_error(
            field, f"{field} is ISO 8601 with an offset, e.g. 2026-12-03T00:00Z"
        )
    if moment.tzinfo is None:
        raise selections.field_error(
            field, f"{field} needs a UTC offset, e.g. 2026-12-03T00:00:00Z"
        )
    return moment


def check_selection(selection: Mapping[str, Any]) -> dict[str, Any]:
    """The selection as stored (JSON), or a `ValidationError` naming the field."""
    selections.refuse_unknown(selection, CRITERIA)
    found: dict[str, Any] = selections.parties_and_ids(selection)
    events = selection.get("events")
    if events is not None:
        if not isinstance(events, list) or not events or any(e not in EVENTS for e in events):
            raise selections.field_error("events", f"events is a list of: {', '.join(EVENTS)}")
        found["events"] = sorted(set(events))
    if selection.get("reminders") is not None:
        if not isinstance(selection["reminders"], bool):
            raise selections.field_error("reminders", "reminders is true or false")
        found["reminders"] = selection["reminders"]
    for field in ("due_from", "due_to"):
        if selection.get(field) is not None:
            found[field] = _moment(selection[field], field).isoformat()
    if selection.get("currency") is not None:
        if selection["currency"] not in ISO_4217:
            raise selections.field_error("currency", "currency is an ISO 4217 code such as USD")
        found["currency"] = selection["currency"]
    for field in ("amount_min", "amount_max"):
        if selection.get(field) is not None:
            found[field] = selections.positive(selection[field], field, minimum=0)
    states = selection.get("states")
    if states is not None:
        if not isinstance(states, list) or not states or any(s not in STATES for s in states):
            raise selections.field_error("states", f"states is a list of: {', '.join(STATES)}")
        found["states"] = sorted(set(states))
    if not found:
        raise ValidationError(
            "name the deadlines: an empty selection would take every one (give events, a "
            "due range, a party, contract ids, a currency, amounts or states)",
            code="selection_empty",
        )
    return found


def check_action(action: str, extend_by: timedelta | None) -> int | None:
    """The action's extension in milliseconds (extend only), or a `ValidationError`."""
    if action not in ACTIONS:
        raise ValidationError(
            f"unknown bulk action {action!r}: pause, resume, extend or retry",
            code="unknown_event",
        )
    if action != "extend":
        return None
    if extend_by is None or not timedelta(0) < extend_by <= MAX_EXTENSION:
        raise ValidationError(
            f"extend needs a positive duration of at most {MAX_EXTENSION.days} days, e.g. P2D",
            code="invalid_duration",
        )
    return extend_by // timedelta(milliseconds=1)


def _query(selection: Mapping[str, Any]) -> dict[str, Any]:
    criteria = {**selection, "reminder_prefix": reminders.PREFIX}
    for field in ("due_from", "due_to"):
        if field in criteria:
            criteria[field] = datetime.fromisoformat(criteria[field])
    return criteria


def _acts_on(action: str, row: Mapping[str, Any]) -> bool:
    """Whether `action` applies to the deadline as it is (a resume to a paused one...)."""
    if action == "pause":
        return not row["paused"]
    if action == "resume":
        return bool(row["paused"])
    if action == "retry":
        return row["failed_at"] is not None
    return reminders.parse(row["event"]) is None  # an extension: timers, not reminders


def select(conn: Connection, action: str, selection: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The items `action` would act on now: the selected deadlines it applies to (a
    reminder follows its deadline, so pausing or extending one is never an item)."""
    return [
        {
            "deadline_id": row["id"],
            "contract_id": row["contract_id"],
            "event": row["event"],
            "due_at": row["due_at"],
            "paused": bool(row["paused"]),
            "amount": row["amount"],
            "currency": row["currency"],
        }
        for row in deadlines.selected(conn, _query(selection))
        if reminders.parse(row["event"]) is None and _acts_on(action, row)
    ]


def money(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the items would move, per currency and UTC day (minor units, and shown)."""
    totals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for item in items:
        if item["amount"] and item["currency"]:
            key = (item["currency"], item["due_at"].date().isoformat())
            totals[key][0] += item["amount"]
            totals[key][1] += 1
    return [
        {"currency": currency, "day": day, "amount": amount, "deadlines": count,
         "shown": format_money(amount, currency)}
        for (currency, day), (amount, count) in sorted(totals.items())
    ]  # fmt: skip


def differences(previewed: list[dict[str, Any]], now: list[dict[str, Any]]) -> dict[str, Any]:
    """Deadlines the selection takes now that the preview did not show; and previewed
    ones that fired, moved or changed since (`gone`)."""
    was = {item["deadline_id"]: item for item in previewed}
    is_ = {item["deadline_id"]: item for item in now}
    same = ("due_at", "paused")
    return {
        "added": sorted(set(is_) - set(was)),
        "gone": sorted(d for d in was if d not in is_ or any(was[d][k] != is_[d][k] for k in same)),
    }


def stale(bulk_id: int, added: list[int]) -> ConflictError:
    return ConflictError(
        f"bulk action {bulk_id}'s selection now takes {len(added)} deadlines its preview "
        "did not show: preview again and review it",
        code="preview_stale",
        details={"added": added[:SAMPLE], "count": len(added)},
    )


def stored(conn: Connection, bulk_id: int) -> dict[str, Any]:
    found = bulk_actions.load(conn, bulk_id)
    if found is None:
        raise NotFound(f"bulk action {bulk_id} does not exist", code="bulk_action_not_found")
    return found


def show(db: DBEngine, bulk_id: int) -> dict[str, Any]:
    """A bulk action: its preview, its results so far, a sample of its items."""
    with db.connect() as conn:
        found = stored(conn, bulk_id)
        sample = bulk_actions.items(conn, bulk_id, limit=SAMPLE)
        results = bulk_actions.results(conn, bulk_id)
        waiting = approvals.pending_for(conn, "bulk_action", bulk_id)  # PA4
    left = results.get("waiting", 0)
    return {
        **{k: v.isoformat() if isinstance(v, datetime) else v for k, v in found.items()},
        "results": results,
        "progress": {"done": found["deadlines"] - left, "total": found["deadlines"]},
        "approval": None if waiting is None else {
            "id": waiting["id"], "status": "pending", "proposed_by": waiting["proposed_by"],
            "shown": format_money(waiting["amount"], waiting["currency"]),
        },
        "sample": [
            {**item, "due_at": item["due_at"].isoformat(),
             "done_at": item["done_at"].isoformat() if item["done_at"] else None}
            for item in sample
        ],
    }  # fmt: skip
