"""The liability forecast's time over N pending deadlines (default 1,000,000; target
< 1 s): auto-approvals of milestones under review and default refunds, spread over 60
days, one in seven paused, in two currencies, seeded with set-based SQL.

    .venv/bin/python -m bench.forecast [--deadlines 1000000] [--backends postgresql,sqlite]

Prints `forecast <backend> <N> pending deadlines: S s` last, one line a backend.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import sqlalchemy as sa

from bench.backends import timing_main
from escrowflow.settings import Settings
from storage.db import make_engine
from storage.models import metadata
from workflows.forecast import forecast

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _seed(db: sa.Engine, count: int) -> None:
    """A contract per deadline (one active milestone, or one open refund, per contract):
    a milestone under review per auto-approval, a refund per default refund (every
    tenth), and the pending deadlines themselves."""
    sqlite = db.dialect.name == "sqlite"
    series = (
        "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < :n) "
        "SELECT i FROM s"
        if sqlite
        else "SELECT i FROM generate_series(1, :n) AS s(i)"
    )
    at = "'2026-11-30 09:00:00'" if sqlite else "TIMESTAMPTZ '2026-11-30 09:00:00+00'"
    due = (
        "datetime('2026-12-01', '+' || (i % 60) || ' days', '+' || (i % 86400) || ' seconds')"
        if sqlite
        else "TIMESTAMPTZ '2026-12-01 00:00:00+00' + (i % 60) * INTERVAL '1 day' "
        "+ (i % 86400) * INTERVAL '1 second'"
    )
    true_if = "CASE WHEN i % 7 = 3 THEN 1 ELSE 0 END" if sqlite else "(i % 7 = 3)"
    with db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO contracts (id, kind, client_id, freelancer_id, title, currency, "
                "state, version, deposited, released, refunded, held, credit, milestone_count, "
                f"created_at, updated_at) SELECT i, 'fixed', 'c' || i, 'f' || i, 'Site', "
                f"CASE WHEN i % 3 = 0 THEN 'USD' ELSE 'EUR' END, 'active', 1, 0, 0, 0, 0, 0, 0, "
                f"{at}, {at} FROM ({series}) AS q"
            ),
            {"n": count},
        )
        conn.execute(
            sa.text(
                "INSERT INTO milestones (id, contract_id, position, title, description, amount, "
                "escrow, released_amount, state, version, created_at, updated_at) "
                "SELECT i, i, 1, 'Work', '', 1000 + i % 5000, "
                f"1000 + i % 7000, 0, 'in_review', 1, {at}, {at} FROM ({series}) AS q "
                "WHERE i % 10 != 0"
            ),
            {"n": count},
        )
        conn.execute(
            sa.text(
                "INSERT INTO refunds (id, contract_id, amount, reason, state, version, "
                "created_at, updated_at) SELECT i, i, 500 + i % 3000, '', "
                f"'requested', 1, {at}, {at} FROM ({series}) AS q WHERE i % 10 = 0"
            ),
            {"n": count},
        )
        conn.execute(
            sa.text(
                "INSERT INTO deadlines (contract_id, entity, entity_id, event, due_at, "
                "state_version, status, created_at, attempts, paused, amount, currency) "
                "SELECT i, "
                "CASE WHEN i % 10 = 0 THEN 'refund' ELSE 'milestone' END, i, "
                "CASE WHEN i % 10 = 0 THEN 'refund_by_default' ELSE 'auto_approve' END, "
                f"{due}, 1, 'pending', {at}, 0, {true_if}, "
                "CASE WHEN i % 10 = 0 THEN 500 + i % 3000 "
                "WHEN 1000 + i % 5000 < 1000 + i % 7000 THEN 1000 + i % 5000 "
                "ELSE 1000 + i % 7000 END, "
                "CASE WHEN i % 3 = 0 THEN 'USD' ELSE 'EUR' END "
                f"FROM ({series}) AS q"
            ),
            {"n": count},
        )
    # Statistics and (PostgreSQL) the visibility map, as autovacuum keeps them on a server
    # that has run a while: outside a transaction, or they are rolled back.
    with db.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("ANALYZE" if sqlite else "VACUUM ANALYZE deadlines"))


def measure(name: str, url: str, count: int) -> float:
    db = make_engine(Settings(database_url=url))
    metadata.create_all(db)
    started = time.perf_counter()
    _seed(db, count)
    print(f"{name}: seeded {count:,} pending deadlines in {time.perf_counter() - started:.1f} s")
    forecast(db, NOW, 30)  # warm the cache, as a server that has run a while has
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        found = forecast(db, NOW, 30)
        timings.append(time.perf_counter() - started)
    moved = sum(t["to_freelancers"] + t["to_clients"] for t in found["totals"])
    print(f"{name}: 30 days: {len(found['by_day'])} day rows, {moved:,} minor units moved")
    db.dispose()
    return min(timings)


def main() -> None:
    timing_main(
        __doc__ or "",
        "deadlines",
        1_000_000,
        measure,
        lambda name, n, seconds: f"forecast {name} {n} pending deadlines: {seconds:.3f} s",
    )


if __name__ == "__main__":
    main()
