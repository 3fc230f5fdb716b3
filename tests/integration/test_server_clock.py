"""DL2: on PostgreSQL the database server's clock decides; a process's own is only
measured against it."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine as DBEngine

from storage.server_clock import ServerClock
from workflows.clock import SkewedClock, SystemClock

pytestmark = pytest.mark.postgresql_only


def _server_now(db: DBEngine) -> object:
    with db.connect() as conn:
        return conn.execute(sa.text("SELECT clock_timestamp()")).scalar_one()


@pytest.mark.parametrize("skew", [timedelta(days=2), timedelta(days=-3), timedelta(0)])
def test_dl2_the_server_clock_ignores_the_process_clock_and_measures_its_skew(
    db: DBEngine, skew: timedelta
) -> None:
    clock = ServerClock(db, SkewedClock(SystemClock(), skew), resync=0.0)
    try:
        before = _server_now(db)
        now = clock.now()
        after = _server_now(db)
        assert before <= now <= after  # type: ignore[operator]
        measured = clock.measure_skew()
        assert abs(measured - skew) < timedelta(seconds=1)
        # Between reads it is carried forward, never ahead of the server's own time.
        carried = ServerClock(db, SkewedClock(SystemClock(), skew), resync=60.0)
        first = carried.now()
        second = carried.now()
        assert first <= second <= _server_now(db)  # type: ignore[operator]
        carried.close()
    finally:
        clock.close()


def test_dl2_a_server_clock_that_cannot_be_read_raises_storage_unavailable(
    db: DBEngine,
) -> None:
    from storage.errors import StorageError

    url = db.url.set(port=1, host="127.0.0.1")
    unreachable = ServerClock(sa.create_engine(url), SystemClock())
    with pytest.raises(StorageError) as refused:
        unreachable.now()
    assert refused.value.code == "database_unavailable"
    assert "127.0.0.1" not in refused.value.message
