"""The dispute team pauses, resumes or extends a deadline, with a reason (PA1: admin
only). Each is recorded like a transition — history (PA3) and an event (NT1) — with the
deadline as the entity, so people see why a timer did not fire when expected."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from storage import deadlines, history
from storage.errors import TransitionRejected, ValidationError
from storage.models import DEADLINES
from storage.statements import Row
from workflows import reminders
from workflows.machines import MACHINES, timer_of
from workflows.unit_of_work import UnitOfWork

ACTIONS = {"pause": "paused", "resume": "resumed", "extend": "extended", "retry": "retried"}
MAX_EXTENSION = timedelta(days=366)
"""The longest one extension may add: a year and a day is a typo beyond that."""


MAX_REASON_LENGTH = 500
MAX_NOTE_LENGTH = 2000


def _checked_text(text: str | None, field: str, longest: int, missing: str, name: str) -> str:
    """Text a person gives for the history, stripped: refused if empty or too long."""
    if not text or not text.strip():
        raise ValidationError(missing, code="field_required", details={"field": field})
    if len(text.strip()) > longest:
        raise ValidationError(
            f"{name} is at most {longest} characters",
            code="field_too_long",
            details={"field": field, "max_length": longest},
        )
    return text.strip()


def checked_reason(reason: str | None) -> str:
    """A reason recorded in history (an admin's action, a terms migration), stripped."""
    missing = "give a reason: it is recorded in the history"
    return _checked_text(reason, "reason", MAX_REASON_LENGTH, missing, "a reason")


def checked_note(text: str | None) -> str:
    """An admin's note on a contract, stripped: 1 to 2,000 characters."""
    missing = "write the note: it is kept in the contract's history"
    return _checked_text(text, "text", MAX_NOTE_LENGTH, missing, "a note")


def check_request(action: str, reason: str, extend_by: timedelta | None) -> None:
    """Refuse a request that could not apply, before any lock is taken."""
    if action not in ACTIONS:
        raise ValidationError(
            f"unknown deadline action {action!r}: pause, resume, extend or retry",
            code="unknown_event",
        )
    checked_reason(reason)
    if action == "extend" and (extend_by is None or extend_by <= timedelta(0)):
        raise ValidationError(
            "extend needs a positive duration, e.g. --by P2D", code="invalid_duration"
        )
    if action == "extend" and extend_by is not None and extend_by > MAX_EXTENSION:
        raise ValidationError(
            f"an extension is at most {MAX_EXTENSION.days} days: extend again later if needed",
            code="extension_too_long",
            details={"field": "by", "max_days": MAX_EXTENSION.days},
        )


def moved_on(row: dict[str, Any] | None, previewed: dict[str, Any]) -> str | None:
    """DL4: why a deadline previewed for a bulk action (`row`: as it is now, under its
    contract's lock) is no longer as it was (fired, cancelled, its due date or pause
    changed), or None: act on it."""
    if row is None or row["status"] != "pending":
        return f"it is {row['status'] if row else 'gone'} since the preview"
    if row["due_at"] != previewed["due_at"] or bool(row["paused"]) != previewed["paused"]:
        return "it moved since the preview (due date or pause changed)"
    return None


def adjust(
    unit: UnitOfWork,
    deadline_id: int,
    action: str,
    reason: str,
    extend_by: timedelta | None,
    bulk_id: int | None = None,
    *,
    row: dict[str, Any] | None = None,
    version: int | None = None,
) -> dict[str, Any]:
    """Apply the action to a deadline whose contract `unit` has locked (as part of bulk
    action `bulk_id`, if given: its history says so, DL4). A bulk action gives the
    deadline's `row` as read under that lock, and its history `version`, read for its
    whole chunk at once."""
    if row is None:
        row = deadlines.load(unit.tx, deadline_id)
    assert row is not None  # its contract was locked through it
    status = "paused" if row["paused"] else "failed" if row["failed_at"] else "pending"
    refused = (
        row["status"] != "pending"
        or (action == "pause" and row["paused"])
        or (action == "resume" and not row["paused"])
        or (action == "retry" and row["failed_at"] is None)  # DL3: only a failed one
    )
    if refused:
        shown = row["status"] if row["status"] != "pending" else status
        raise TransitionRejected(
            f"deadline {deadline_id} is {shown}: it cannot be {ACTIONS[action]}",
            code="event_not_allowed_in_state",
        )
    if reminders.parse(row["event"]) is not None:
        raise TransitionRejected(
            f"deadline {deadline_id} is a reminder: {action} the deadline it reminds of, "
            "and its reminders follow",
            code="reminder_not_adjustable",
        )
    changes = _changes(row, action, extend_by, unit.now, unit.actor.party)
    deadlines.adjust(unit.tx, deadline_id, changes)
    move_reminders(unit, {**row, **changes})
    if version is None:
        version = 1 + history.count_of(unit.tx, "deadline", deadline_id)
    record = Row("deadline", DEADLINES, {**row, **changes})
    after = {**row, **changes}
    new_status = "paused" if after["paused"] else "failed" if after["failed_at"] else "pending"
    due_at = changes.get("due_at", row["due_at"])
    payload = {
        "reason": reason.strip(),
        "event": row["event"],
        "entity": row["entity"],
        "entity_id": row["entity_id"],
        "due_at": str(due_at),
    }
    left = changes.get("paused_left_ms") or row["paused_left_ms"]
    if action in ("pause", "resume") or (action == "extend" and row["paused"]):
        payload["left"] = reminders.iso_duration(timedelta(milliseconds=left or 0))  # DL1
    if action == "retry":
        payload["last_error"] = row["last_error"]
    if bulk_id is not None:
        payload["bulk_id"] = bulk_id
    step = unit.note(record, action, payload, states=(status, new_status), version=version)
    return {
        "entity": "deadline",
        "id": deadline_id,
        "event": action,
        "state": new_status,
        "version": version,
        "history_id": step.history_id,
        "due_at": due_at.isoformat(),
        "created": [],
        "replayed": False,
    }


def left_of(due_at: datetime, now: datetime) -> int:
    """DL1: the milliseconds a deadline has left at `now` (none once it is due)."""
    return max(0, (due_at - now) // timedelta(milliseconds=1))


def _changes(
    row: dict[str, Any], action: str, extend_by: timedelta | None, now: datetime, by: str
) -> dict[str, Any]:
    """The deadline's columns after `action`. DL1: a pause keeps the time left; a resume
    makes it due that long after the resume; an extension of a paused deadline adds to
    the time it will have left."""
    if action == "extend":
        assert extend_by is not None
        changes: dict[str, Any] = {"due_at": row["due_at"] + extend_by}
        if row["paused"]:
            more = extend_by // timedelta(milliseconds=1)
            changes["paused_left_ms"] = (row["paused_left_ms"] or 0) + more
        return changes
    if action == "retry":  # DL3: mended, so it fires on the next sweep, afresh
        return {"failed_at": None, "attempts": 0, "next_attempt_at": None}
    if action == "pause":
        left = left_of(row["due_at"], now)
        return {"paused": True, "paused_at": now, "paused_by": by, "paused_left_ms": left}
    left = row["paused_left_ms"]
    due_at = now + timedelta(milliseconds=left) if left is not None else row["due_at"]
    return {
        "paused": False,
        "due_at": due_at,
        "paused_at": None,
        "paused_by": None,
        "paused_left_ms": None,
    }


def move_reminders(unit: UnitOfWork, deadline: dict[str, Any]) -> None:
    """NT2: a paused or extended deadline's reminders are dropped; a running one's are
    scheduled from its (new) due time, those still ahead of now, by the contract's
    terms (a terms migration's too, X15)."""
    reminders.drop(unit.tx, deadline, unit.now)
    if deadline["paused"]:
        return
    record = unit.load(deadline["entity"], deadline["entity_id"])
    timer = timer_of(MACHINES[record.entity], record["state"])
    if timer is not None and timer.event == deadline["event"]:
        reminders.schedule(unit.tx, unit.policy, timer, deadline, unit.now)
