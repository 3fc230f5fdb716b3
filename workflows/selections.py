"""What a selection of contracts or deadlines (a terms migration, TM2; a bulk action,
DL4) may say, checked one way: unknown fields, party ids, contract ids."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from storage.errors import ValidationError

MAX_IDS = 10_000
"""The most contract ids one selection names (select by terms, party or state beyond)."""


def field_error(field: str, message: str) -> ValidationError:
    return ValidationError(message, code="invalid_field", details={"field": field})


def refuse_unknown(selection: Mapping[str, Any], known: Iterable[str]) -> None:
    unknown = sorted(set(selection) - set(known))
    if unknown:
        raise ValidationError(
            f"unknown selection field {unknown[0]!r}: use {', '.join(known)}",
            code="unknown_field",
            details={"field": unknown[0]},
        )


def positive(value: Any, field: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise field_error(field, f"{field} takes whole numbers of at least {minimum}")
    return value


def parties_and_ids(selection: Mapping[str, Any]) -> dict[str, Any]:
    """`client_id`, `freelancer_id` (party ids) and `ids` (contract ids), as given."""
    found: dict[str, Any] = {}
    for party in ("client_id", "freelancer_id"):
        value = selection.get(party)
        if value is not None:
            if not isinstance(value, str) or not 0 < len(value) <= 100:
                raise field_error(party, f"{party} is a party id of 1 to 100 characters")
            found[party] = value
    if selection.get("ids") is not None:
        ids = selection["ids"]
        if not isinstance(ids, list) or not ids or len(ids) > MAX_IDS:
            raise field_error("ids", f"ids is a list of 1 to {MAX_IDS:,} contract ids")
        found["ids"] = sorted({positive(i, "ids") for i in ids})
    return found
