"""NT2: before a timer fires, the party who can still act is reminded.

Reminders are data, like deadlines: rows of the deadlines table whose event names the
timer and how long before it they fall due (``remind:auto_approve:P3D``), scheduled
with the timer's deadline and fired by the same sweep, with the same guarantees
(claimed with a lease, once, stale-safe). A reminder changes no state: it writes a
history row (``reminder``, from and to the same state and version) and one feed event,
``<entity>.reminder``, for the party who can act, with the amount at stake.

It is dropped when its deadline is: cancelled with it (the entity moved on), marked
stale if the entity changed version, cancelled when an admin pauses or extends the
deadline — and scheduled again, from the deadline's new due time, on resume or
extension (only the reminders still ahead of now).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from storage import deadlines
from storage.statements import Row, Statements
from workflows.actors import Role
from workflows.lifecycle import Timer
from workflows.policy import Policy, approved_amount

PREFIX = "remind:"
_SAME_AS_DEADLINE = ("contract_id", "entity", "entity_id", "state_version")
_DURATION = re.compile(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?")


def event_name(timer_event: str, before: timedelta) -> str:
    """The deadline event of a reminder, e.g. ``remind:auto_approve:P3D``."""
    return f"{PREFIX}{timer_event}:{iso_duration(before)}"


def parse(event: str) -> tuple[str, timedelta] | None:
    """(timer event, how long before) of a reminder's event; None for a timer's own."""
    if not event.startswith(PREFIX):
        return None
    timer_event, _, duration = event[len(PREFIX) :].rpartition(":")
    found = _DURATION.fullmatch(duration)
    if not timer_event or found is None:
        return None
    days, hours, minutes, seconds = (int(part or 0) for part in found.groups())
    return timer_event, timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def iso_duration(length: timedelta) -> str:
    """``P3D``, ``PT12H``, ``P1DT30M``: whole seconds."""
    days, rest = length.days, int(length.total_seconds()) - length.days * 86_400
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    clock = "".join(f"{n}{u}" for n, u in ((hours, "H"), (minutes, "M"), (seconds, "S")) if n)
    if not days and not clock:
        return "PT0S"
    return "P" + (f"{days}D" if days else "") + (f"T{clock}" if clock else "")


def schedule(
    tx: Statements,
    policy: Policy,
    timer: Timer,
    deadline: Mapping[str, Any],
    now: datetime,
) -> None:
    """Schedule the timer's reminders still ahead of `now`, before `deadline`."""
    deadlines.schedule(tx, rows(policy, timer, deadline, now), now)


def rows(
    policy: Policy, timer: Timer, deadline: Mapping[str, Any], now: datetime
) -> list[dict[str, Any]]:
    """The deadline rows of the timer's reminders still ahead of `now` (the row given to
    `storage.deadlines.schedule` for the timer itself is `deadline`)."""
    found = []
    for before in policy.reminders.get(timer.policy, ()):
        due_at = deadline["due_at"] - before
        if due_at > now:
            reminder = {key: deadline[key] for key in _SAME_AS_DEADLINE}
            event = event_name(timer.event, before)
            reminder.update(event=event, due_at=due_at, amount=None, currency=None)
            found.append(reminder)
    return found


def notice(
    contract: Row, record: Row, timer: Timer, due_at: datetime
) -> tuple[str, dict[str, Any]]:
    """Whom to remind that `timer` fires at `due_at` (the party who can still act), and
    what the reminder says; the engine records it as a step that moves nothing."""
    role = timer.reminds or Role.CLIENT
    party = contract["client_id"] if role is Role.CLIENT else contract["freelancer_id"]
    return party, {
        "event": timer.event,
        "due_at": due_at.isoformat(),
        "party": {"role": role.value, "id": party},
        "amount_at_stake": at_stake(record, timer.event),
        "currency": contract["currency"],
    }


def drop(tx: Statements, deadline: Mapping[str, Any], now: datetime) -> None:
    """Cancel the pending reminders of a deadline (paused, extended)."""
    prefix = f"{PREFIX}{deadline['event']}:"
    deadlines.cancel_reminders(tx, deadline["entity"], deadline["entity_id"], prefix, now)


def at_stake(record: Row, timer_event: str) -> int | None:
    """What the timer would move: an auto-approval's release (MS10), a default refund's
    amount (RF2), or the amount a change request asks for (CR6: it lapses)."""
    if timer_event == "auto_approve":
        return approved_amount(record)
    value = record.values.get("amount")
    return None if value is None else int(value)
