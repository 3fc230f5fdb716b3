"""Every query on the idempotency table: the stored result of each keyed request (ES3)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from storage import models
from storage.models.records import IDEMPOTENCY_KEY_LENGTH
from storage.statements import Statements

_i = models.IDEMPOTENCY
MAX_KEY_LENGTH = IDEMPOTENCY_KEY_LENGTH
"""The longest Idempotency-Key stored (the column's width)."""


def find(tx: Statements, key: str) -> tuple[str, dict[str, Any]] | None:
    """The fingerprint and result stored under `key`, if any."""
    row = tx.conn.execute(sa.select(_i.c.fingerprint, _i.c.result).where(_i.c.key == key)).first()
    return None if row is None else (row.fingerprint, row.result)


def remember(
    tx: Statements, key: str, fingerprint: str, result: dict[str, Any], now: datetime
) -> None:
    tx.append(_i, {"key": key, "fingerprint": fingerprint, "result": result, "created_at": now})
