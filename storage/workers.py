"""Every query on the workers table (one owner): a daemon's heartbeats, for `status`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from storage import models
from storage.db import transaction

_w = models.WORKERS


def started(db: Engine, row: dict[str, Any]) -> None:
    """A worker's first heartbeat: who and where it is, and when it started."""
    with transaction(db) as conn:
        conn.execute(_w.insert().values(**row, fired=0, stale=0, failed=0))


def seen(
    db: Engine,
    worker_id: str,
    now: datetime,
    *,
    clock_skew_seconds: float | None,
    swept: tuple[int, int, int] | None = None,
    stopped: bool = False,
) -> None:
    """A heartbeat: seen at `now` (the deployment's clock), its clock's skew, and what
    it fired, found stale and failed since the last (`swept`), if it swept."""
    values: dict[str, Any] = {"last_seen_at": now, "clock_skew_seconds": clock_skew_seconds}
    if swept is not None:
        fired, stale, failed = swept
        values.update(
            last_sweep_at=now,
            fired=_w.c.fired + fired,
            stale=_w.c.stale + stale,
            failed=_w.c.failed + failed,
        )
    if stopped:
        values["stopped_at"] = now
    with transaction(db) as conn:
        conn.execute(_w.update().where(_w.c.id == worker_id).values(**values))


def every(conn: Connection) -> list[dict[str, Any]]:
    """Every worker that has run against this database, oldest first."""
    return [dict(r) for r in conn.execute(sa.select(_w).order_by(_w.c.started_at)).mappings()]
