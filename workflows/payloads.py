"""Strict parsing of event payloads: bad input is refused with a code and a fix.

Money must be an integer count of minor units: a float (even 5.0), a string or a boolean
is refused, never rounded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

from storage.errors import ValidationError
from workflows.policy import Policy, format_money

MILESTONE_FIELDS = ("title", "description", "due_date", "amount")
# Ten trillion major units: far above any contract, far below what a BIGINT column holds
# (sums of amounts cannot overflow it).
MAX_AMOUNT = 10**15
# Ids are 32-bit integers on PostgreSQL.
MAX_ID = 2**31 - 1


def _invalid(field: str, code: str, message: str) -> ValidationError:
    return ValidationError(message, code=code, details={"field": field})


def only(payload: Mapping[str, Any], allowed: Iterable[str], what: str) -> None:
    """Refuse fields the event does not take (a typo must not be silently ignored)."""
    unknown = sorted(set(payload) - set(allowed) - {"reason"})
    if unknown:
        accepted = ", ".join(sorted({*allowed, "reason"}))
        raise ValidationError(
            f"{what} does not take {', '.join(unknown)}; it takes: {accepted}",
            code="unknown_field",
            details={"fields": unknown},
        )


def reason(payload: Mapping[str, Any]) -> str | None:
    """The optional free-text reason every event may carry (PA3: why)."""
    value = payload.get("reason")
    if value is None:
        return None
    return str(text(payload, "reason", max_length=2000))


def integer_amount(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        kind = type(value).__name__
        raise _invalid(
            field,
            "amount_not_integer",
            f"{field} must be an integer number of minor units (cents), not {kind} {value!r}: "
            "send 1250 for 12.50",
        )
    if value <= 0:
        raise _invalid(field, "amount_not_positive", f"{field} must be greater than 0, not {value}")
    if value > MAX_AMOUNT:
        raise _invalid(
            field, "amount_too_large", f"{field} must be at most {MAX_AMOUNT} minor units"
        )
    return value


def non_negative_amount(value: Any, field: str) -> int:
    if value == 0 and not isinstance(value, bool | float):
        return 0
    return integer_amount(value, field)


def milestone_amount(value: Any, field: str, currency: str, policy: Policy) -> int:
    amount = integer_amount(value, field)
    minimum = policy.minimum_amount(currency)
    if amount < minimum:
        raise _invalid(
            field,
            "amount_below_minimum",
            f"{field} {format_money(amount, currency)} is below the minimum milestone amount "
            f"of {format_money(minimum, currency)}",
        )
    return amount


def text(payload: Mapping[str, Any], field: str, *, max_length: int, required: bool = False) -> Any:
    value = payload.get(field)
    if value is None:
        if required:
            raise _invalid(field, "field_required", f"{field} is required")
        return None
    if not isinstance(value, str):
        raise _invalid(field, "invalid_text", f"{field} must be text, not {type(value).__name__}")
    value = value.strip()
    if required and not value:
        raise _invalid(field, "field_required", f"{field} must not be empty")
    if len(value) > max_length:
        raise _invalid(field, "text_too_long", f"{field} is longer than {max_length} characters")
    return value


def due_date(payload: Mapping[str, Any], field: str = "due_date") -> date | None:
    """A milestone's due date (MS1). MS11: it is information only; no timer reads it."""
    value = payload.get(field)
    if value is None:
        return None
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise _invalid(field, "invalid_date", f"{field} must be a date as YYYY-MM-DD, not {value!r}")


def identifier(payload: Mapping[str, Any], field: str, *, required: bool = True) -> Any:
    value = payload.get(field)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_ID:
        raise _invalid(field, "invalid_id", f"{field} must be a positive integer id, not {value!r}")
    return value


def milestone_fields(
    payload: Mapping[str, Any], currency: str, policy: Policy, *, new: bool
) -> dict[str, Any]:
    """Title, description, due date and amount of a milestone (MS1).

    A new milestone needs a title and an amount; a change needs at least one field.
    """
    fields: dict[str, Any] = {}
    if new or "title" in payload:
        fields["title"] = text(payload, "title", max_length=200, required=True)
    if new or "description" in payload:
        fields["description"] = text(payload, "description", max_length=5000) or ""
    if "due_date" in payload:
        fields["due_date"] = due_date(payload)
    if new or "amount" in payload:
        if new and "amount" not in payload:
            raise _invalid("amount", "field_required", "amount is required")
        fields["amount"] = milestone_amount(payload["amount"], "amount", currency, policy)
    if not new and not fields:
        raise ValidationError(
            f"give at least one of {', '.join(MILESTONE_FIELDS)} to change",
            code="nothing_to_change",
        )
    return fields


def listing(payload: Mapping[str, Any], field: str, *, max_items: int) -> list[Any]:
    value = payload.get(field)
    if not isinstance(value, list) or not value:
        raise _invalid(field, "invalid_list", f"{field} must be a non-empty list")
    if len(value) > max_items:
        raise _invalid(field, "too_many_items", f"{field} has more than {max_items} items")
    return value


def mapping(value: Any, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _invalid(field, "invalid_object", f"{field} must be an object")
    return value
