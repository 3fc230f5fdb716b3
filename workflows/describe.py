"""What changed, as people read it (NT1, FP2): fields before and after, proposal items.

Used for the history rows and events the engine writes and for the views that read
them back, so that both say the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MILESTONE_FIELDS = ("title", "description", "due_date", "amount")


def jsonable(value: Any) -> Any:
    """Dates as ISO text: what JSON columns and events hold."""
    return value.isoformat() if hasattr(value, "isoformat") else value


def changes(before: Any, after: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """NT1, FP2: each field of `after`, with its value before and after, for people."""
    return {
        field: {"before": jsonable(before[field]), "after": jsonable(after[field])}
        for field in MILESTONE_FIELDS
        if field in after
    }


def describe_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """FP2: one item of a proposal as the client reads it before answering: the action,
    the milestone (None for an add) and each field's value before and after."""
    before = item["before"] or {}
    if item["action"] == "add":
        fields = {f: {"before": None, "after": jsonable(item[f])} for f in MILESTONE_FIELDS}
        fields = {f: v for f, v in fields.items() if v["after"] is not None}
    elif item["action"] == "edit":
        fields = {f: {"before": jsonable(before[f]), "after": jsonable(item[f])} for f in before}
    else:
        fields = {f: {"before": jsonable(before[f]), "after": None} for f in before}
    return {"action": item["action"], "milestone_id": item["milestone_id"], "changes": fields}
