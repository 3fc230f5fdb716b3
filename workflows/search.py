"""The dispute desk's search and its "needs attention" counts, from what a person types.

A search takes text fields (the console's form, the API's query) and turns them into
`storage.search.ContractSearch`, refusing what it cannot mean with the field and what to
type: a state the contract machine does not have, a currency the deployment does not
take, an amount range without its currency (an amount means nothing without one) or a
minimum above the maximum, a day count that is not a whole number of days. "Due within
N days" is counted from the deployment's clock (DL2), never a process's own.

Pages are the lists' keyset pages (`workflows.lists`: ``items`` and ``next_cursor``); a
party sees only its own contracts.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine as DBEngine

from storage import search
from storage.db import translated_errors
from storage.errors import ValidationError
from workflows import lists
from workflows.actors import Actor
from workflows.machines import MACHINES
from workflows.policy import ISO_4217, parse_money

FIELDS = (
    "party",
    "title",
    "state",
    "currency",
    "held_min",
    "held_max",
    "due_within_days",
    "has_dispute",
    "held_back",
)
"""What a search takes, each optional: a party-id prefix (client or freelancer), title
words (each must appear), the contract's state and currency, the money it holds between
two amounts (typed as people write them, in `currency`), waiting on a timer due within N
days, has a disputed refund, has a paused or failed deadline."""

DUE_SOON_DAYS = 3
"""The front page's "due soon": timers due within this many days."""

MAX_DAYS = 3650
MAX_WORDS = 8
MAX_TEXT = 100
COUNT_CAP = search.COUNT_CAP


def _states() -> tuple[str, ...]:
    return tuple(state.id for state in MACHINES["contract"].states)


def _refused(field: str, message: str) -> ValidationError:
    return ValidationError(message, code="invalid_search", details={"field": field})


def _flag(field: str, text: str) -> bool:
    if text in ("", "0", "false", "no", "off"):
        return False
    if text in ("1", "true", "yes", "on"):
        return True
    raise _refused(field, f"{field} {text[:20]!r} is not yes or no: give true or false")


def _text(field: str, text: str) -> str:
    if len(text) > MAX_TEXT:
        raise _refused(field, f"{field} is longer than {MAX_TEXT} characters: shorten it")
    return text


def _days(text: str) -> int | None:
    if not text:
        return None
    if not text.isascii() or not text.isdigit() or not 0 <= int(text[:5]) <= MAX_DAYS:
        raise _refused(
            "due_within_days",
            f"due_within_days {text[:20]!r} is not a number of days: give 0 to {MAX_DAYS}",
        )
    return int(text)


def _amounts(given: Mapping[str, str], currency: str | None) -> tuple[int | None, int | None]:
    low_text, high_text = given.get("held_min", ""), given.get("held_max", "")
    if not (low_text or high_text):
        return None, None
    if currency is None:
        field = "held_min" if low_text else "held_max"
        raise _refused(field, f"{field} needs a currency: choose the currency it is in")
    low = parse_money(low_text, currency, "held_min") if low_text else None
    high = parse_money(high_text, currency, "held_max") if high_text else None
    if low is not None and high is not None and low > high:
        raise _refused("held_min", "held_min is above held_max: swap them or widen the range")
    return low, high


def criteria(given: Mapping[str, str], now: datetime) -> search.ContractSearch:
    """The search `given` (field -> typed text; blanks ignored) asks for, at `now`."""
    unknown = sorted(set(given) - set(FIELDS))
    if unknown:
        raise ValidationError(
            f"unknown filter {', '.join(unknown)}: search takes {', '.join(FIELDS)}, "
            "limit and cursor",
            code="unknown_filter",
        )
    cleaned = {k: _text(k, v.strip()) for k, v in given.items()}
    state = cleaned.get("state") or None
    if state is not None and state not in _states():
        raise _refused(
            "state", f"state {state!r} is not a contract's: give one of " + ", ".join(_states())
        )
    currency = (cleaned.get("currency") or "").upper() or None
    if currency is not None and currency not in ISO_4217:
        raise _refused(
            "currency",
            f"currency {currency[:10]!r} is not one we take: give an ISO 4217 code such as EUR",
        )
    words = tuple(cleaned.get("title", "").split())
    if len(words) > MAX_WORDS:
        raise _refused("title", f"title has more than {MAX_WORDS} words: search by fewer")
    low, high = _amounts(cleaned, currency)
    days = _days(cleaned.get("due_within_days", ""))
    return search.ContractSearch(
        party_prefix=cleaned.get("party") or None,
        title_words=words,
        state=state,
        currency=currency,
        held_min=low,
        held_max=high,
        due_by=None if days is None else now + timedelta(days=days),
        has_dispute=_flag("has_dispute", cleaned.get("has_dispute", "")),
        held_back=_flag("held_back", cleaned.get("held_back", "")),
    )


def contract_page(
    db: DBEngine,
    given: Mapping[str, str],
    viewer: Actor | None,
    now: datetime,
    limit: int = lists.DEFAULT_LIMIT,
    cursor: str | None = None,
) -> dict[str, Any]:
    """A page of the contracts the search `given` finds, in id order."""
    wanted = criteria(given, now)
    party = lists.party_of(viewer)
    if party is not None:
        wanted = search.ContractSearch(**{**wanted.__dict__, "party": party})
    limit = lists.checked_limit(limit)
    after = lists.decode_cursor(cursor, 1)
    with translated_errors(), db.connect() as conn:
        rows = search.contracts(conn, wanted, None if after is None else int(after[0]), limit + 1)
    return lists.answer(rows, limit, lambda r: [r["id"]])


def attention(db: DBEngine, now: datetime, due_within_days: int = DUE_SOON_DAYS) -> dict[str, int]:
    """How many contracts each "needs attention" view holds (capped: above COUNT_CAP
    reads as "more than COUNT_CAP"): disputed refunds, held-back deadlines, timers due
    within `due_within_days`."""
    with translated_errors(), db.connect() as conn:
        return search.attention(conn, now + timedelta(days=due_within_days))
