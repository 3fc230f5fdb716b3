"""The liability forecast: the money that will move by itself in the next days if nobody
acts — auto-approvals releasing escrow to freelancers (MS10) and default refunds
returning it to clients (RF2) — per day and currency, from the pending deadlines and
what each entity holds. Paused deadlines are shown apart: they move nothing until
resumed. It agrees with `next` summed over every contract (the same amounts)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine as DBEngine

from storage import deadlines
from storage.db import translated_errors
from storage.errors import ValidationError

DEFAULT_DAYS = 30
MAX_DAYS = 366
_SIDE = {"auto_approve": "to_freelancers", "refund_by_default": "to_clients"}
_COUNT = {"auto_approve": "releases", "refund_by_default": "refunds"}


def _blank(**keys: Any) -> dict[str, Any]:
    return {**keys, "to_freelancers": 0, "releases": 0, "to_clients": 0, "refunds": 0}


def forecast(
    db: DBEngine, now: datetime, days: int = DEFAULT_DAYS, parties: dict[str, str] | None = None
) -> dict[str, Any]:
    """What moves before `now + days` (overdue deadlines included: they fire next);
    `parties`: only one client's and/or freelancer's contracts."""
    if not 1 <= days <= MAX_DAYS:
        raise ValidationError(
            f"days {days} is out of range: give 1 to {MAX_DAYS}", code="invalid_days"
        )
    until = now + timedelta(days=days)
    with translated_errors(), db.connect() as conn:
        rows = deadlines.money_due(conn, until, parties)
    by_day: dict[tuple[str, str], dict[str, Any]] = {}
    totals: dict[str, dict[str, Any]] = {}
    paused: dict[str, dict[str, Any]] = {}
    for row in rows:
        currency, side, count = row["currency"], _SIDE[row["event"]], _COUNT[row["event"]]
        if row["paused"]:
            targets = [paused.setdefault(currency, _blank(currency=currency))]
        else:
            day = str(row["day"])[:10]
            targets = [
                by_day.setdefault((day, currency), _blank(date=day, currency=currency)),
                totals.setdefault(currency, _blank(currency=currency)),
            ]
        for target in targets:
            target[side] += int(row["amount"])
            target[count] += int(row["count"])
    return {
        "from": now.isoformat(),
        "until": until.isoformat(),
        "by_day": [by_day[key] for key in sorted(by_day)],
        "totals": [totals[c] for c in sorted(totals)],
        "paused": [paused[c] for c in sorted(paused)],
    }
