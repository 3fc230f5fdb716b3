"""How console pages are rendered: Jinja2 templates with every value escaped, and the
headers every page carries (a strict Content-Security-Policy, no framing, no caching)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import TypeAdapter

from escrowflow.console.sessions import Viewer
from escrowflow.text import printable
from workflows import reminders
from workflows.engine import EscrowEngine
from workflows.policy import format_money

HERE = Path(__file__).resolve().parent
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
}


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True)
    )
    env.filters["money"] = lambda amount, currency: (
        "—" if amount is None else format_money(int(amount), currency)
    )
    env.filters["when"] = _when
    env.filters["duration"] = _duration
    env.filters["readable"] = readable
    env.filters["event_name"] = event_name
    return env


def event_name(event: str) -> str:
    """A deadline's event as people read it: a reminder (NT2) says of what and how long
    before, not its internal name (`remind:expire:P1D`)."""
    found = reminders.parse(event)
    if found is None:
        return event.replace("_", " ")
    timer_event, before = found
    return f"reminder {_duration(before.total_seconds())} before {timer_event.replace('_', ' ')}"


MONEY_KEYS = frozenset(
    {"amount", "to_client", "to_freelancer", "moves", "escrow", "deposited", "released",
     "refunded", "held", "credit", "released_amount"}
)  # fmt: skip
"""Payload keys whose integers are minor units of the contract's currency."""


def readable(value: Any, key: str, currency: str) -> str:
    """A history payload's value as people read it: money as money, a change as
    before → after, times in the console's one format, lists joined; never a repr."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and key in MONEY_KEYS:
        return format_money(value, currency)
    if isinstance(value, dict):
        if set(value) <= {"before", "after"}:
            before = readable(value.get("before"), key, currency)
            return f"{before} → {readable(value.get('after'), key, currency)}"
        return "; ".join(
            f"{k.replace('_', ' ')} {readable(v, k, currency)}" for k, v in value.items()
        )
    if isinstance(value, list):
        return ", ".join(readable(item, key, currency) for item in value) or "none"
    if isinstance(value, str) and len(value) >= 20 and value[4:5] == "-" and "T" in value:
        try:
            return _when(value)
        except ValueError:
            return value
    return str(value)


def _duration(seconds: float | str) -> str:
    """10 days, 9 days 23 hours, 45 minutes: to the minute, the two largest units. Takes
    seconds, or an ISO 8601 duration as the API writes it (`P9DT23H`)."""
    if isinstance(seconds, str):
        seconds = _ISO_DURATION.validate_python(seconds).total_seconds()
    minutes = int(seconds // 60)
    parts = [(minutes // 1440, "day"), (minutes // 60 % 24, "hour"), (minutes % 60, "minute")]
    shown = [f"{n} {unit}{'s' if n != 1 else ''}" for n, unit in parts if n]
    return " ".join(shown[:2]) or "no time"


_ISO_DURATION = TypeAdapter(timedelta)


def _when(value: Any) -> str:
    if value is None:
        return "—"
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


_TEMPLATES = _environment()


def render_page(
    request: Request, name: str, viewer: Viewer | None, status: int = 200, **context: Any
) -> HTMLResponse:
    engine: EscrowEngine = request.app.state.engine
    html = _TEMPLATES.get_template(name).render(
        viewer=viewer, csrf=viewer.session.csrf if viewer else "", now=engine.clock.now(), **context
    )
    # Text stored before the boundary refused lone surrogates still renders (as U+FFFD).
    return HTMLResponse(printable(html), status_code=status, headers=HEADERS)
