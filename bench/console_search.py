"""The console's contract search and its "needs attention" counts on N contracts
(default 1,000,000; target < 200 ms p95 on PostgreSQL): every criterion alone, a few
together, and the front page's three counts, each the first page of 50 through
`workflows.search` as the console asks for it (criteria as typed), 20 runs each with
varied values. Seeded with set-based SQL: 5,000 clients and 20,000 freelancers, titles
from 12 words, six states, three currencies, about a third waiting on a timer over 60
days (one in fifty of those paused, one in a thousand failed), one in 200 with a
disputed refund.

Run by `python -m bench.console` (after the inspector) or alone:

    .venv/bin/python -m bench.console_search [--contracts 1000000] [--backends postgresql]

Prints `search <backend> <N> contracts: p95 <ms> ms (slowest: <what>)` last.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa

from bench.backends import run_main
from escrowflow.settings import Settings
from storage.db import make_engine
from storage.models import metadata
from workflows import search

NOW = datetime(2026, 12, 1, tzinfo=UTC)
WORDS = ("logo", "site", "shop", "app", "brand", "video", "copy", "audit", "api", "seo",
         "mobile", "design")  # fmt: skip
RUNS = 20


def _sql(db: sa.Engine) -> dict[str, str]:
    if db.dialect.name == "sqlite":
        return {
            "series": "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s "
            "WHERE i < :n) SELECT i FROM s",
            "at": "'2026-11-30 09:00:00'",
            "due": "datetime('2026-12-01', '+' || (i % 60) || ' days', "
            "'+' || (i % 86400) || ' seconds')",
            "paused": "CASE WHEN i % 150 = 1 THEN 1 ELSE 0 END",
            "failed": "CASE WHEN i % 3000 = 4 THEN '2026-11-30 10:00:00' END",
        }
    return {
        "series": "SELECT i FROM generate_series(1, :n) AS s(i)",
        "at": "TIMESTAMPTZ '2026-11-30 09:00:00+00'",
        "due": "TIMESTAMPTZ '2026-12-01 00:00:00+00' + (i % 60) * INTERVAL '1 day' "
        "+ (i % 86400) * INTERVAL '1 second'",
        "paused": "(i % 150 = 1)",
        "failed": "CASE WHEN i % 3000 = 4 THEN TIMESTAMPTZ '2026-11-30 10:00:00+00' END",
    }


def _seed(db: sa.Engine, count: int) -> None:
    q = _sql(db)
    words = ", ".join(f"'{w}'" for w in WORDS)
    title = (
        f"upper(substr((ARRAY[{words}])[1 + i % 12], 1, 1)) || "
        f"substr((ARRAY[{words}])[1 + i % 12], 2) || ' ' || "
        f"(ARRAY[{words}])[1 + (i / 12) % 12] || ' ' || i"
    )
    if db.dialect.name == "sqlite":  # no arrays: a CASE per word
        pick = "CASE {x} " + " ".join(f"WHEN {n} THEN '{w}'" for n, w in enumerate(WORDS)) + " END"
        title = f"{pick.format(x='i % 12')} || ' ' || {pick.format(x='(i / 12) % 12')} || ' ' || i"
    states = "CASE i % 6 WHEN 0 THEN 'offer' WHEN 5 THEN 'ended' ELSE 'active' END"
    held = "((i % 65536) * 7919) % 500000"  # all of it deposited, none released yet
    currency = "CASE (i / 6) % 3 WHEN 0 THEN 'USD' WHEN 1 THEN 'EUR' ELSE 'GBP' END"
    with db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO contracts (id, kind, client_id, freelancer_id, title, currency, "
                "state, version, deposited, released, refunded, held, credit, milestone_count, "
                f"created_at, updated_at) SELECT i, 'fixed', 'client-' || (i % 5000), "
                f"'fl-' || (i % 20000), {title}, {currency}, {states}, 1, {held}, 0, 0, "
                f"{held}, 0, 0, {q['at']}, {q['at']} FROM ({q['series']}) AS q"
            ),
            {"n": count},
        )
        conn.execute(
            sa.text(
                "INSERT INTO refunds (id, contract_id, amount, reason, state, version, "
                f"created_at, updated_at) SELECT i, i, 100, '', 'disputed', 1, {q['at']}, "
                f"{q['at']} FROM ({q['series']}) AS q WHERE i % 200 = 7"
            ),
            {"n": count},
        )
        conn.execute(
            sa.text(
                "INSERT INTO deadlines (contract_id, entity, entity_id, event, due_at, "
                "state_version, status, created_at, attempts, paused, failed_at, amount, "
                f"currency) SELECT i, 'milestone', i, 'auto_approve', {q['due']}, 1, "
                f"'pending', {q['at']}, 0, {q['paused']}, {q['failed']}, 100, {currency} "
                f"FROM ({q['series']}) AS q WHERE i % 3 = 1"
            ),
            {"n": count},
        )
    with db.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("ANALYZE" if db.dialect.name == "sqlite" else "VACUUM ANALYZE"))


def _searches(runs: int) -> dict[str, Callable[[int], dict[str, str]]]:
    """Each search by name: the typed criteria of its run number `r`."""
    return {
        "party prefix": lambda r: {"party": f"client-{r * 37 % 5000}"},
        "party prefix, wide": lambda r: {"party": f"FL-{r % 10}"},
        "title word": lambda r: {"title": WORDS[r % 12]},
        "two title words": lambda r: {"title": f"{WORDS[r % 12]} {WORDS[(r + 5) % 12]}"},
        "rare title word": lambda r: {"title": f"{WORDS[r % 12]} {r * 4111 + 7}"},
        "state and currency": lambda r: {"state": ("offer", "ended")[r % 2], "currency": "GBP"},
        "money held": lambda r: {
            "currency": "EUR", "held_min": f"{r * 100}", "held_max": f"{r * 100 + 3}.50",
        },
        "timer due within 2 days": lambda r: {"due_within_days": "2"},
        "timer due within 0 days": lambda r: {"due_within_days": "0"},
        "has a dispute": lambda r: {"has_dispute": "1"},
        "held back": lambda r: {"held_back": "1"},
        "party, state and timer": lambda r: {
            "party": f"client-{r * 53 % 5000}", "state": "active", "due_within_days": "30",
        },
        "dispute in EUR over 100.00": lambda r: {
            "has_dispute": "1", "currency": "EUR", "held_min": "100.00",
        },
    }  # fmt: skip


def _p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20, method="inclusive")[-1]


def measure(name: str, url: str, count: int) -> float:
    db = make_engine(Settings(database_url=url))
    metadata.create_all(db)
    started = time.perf_counter()
    _seed(db, count)
    print(f"{name}: seeded {count:,} contracts in {time.perf_counter() - started:.1f} s")
    worst = (0.0, "")
    for what, given in _searches(RUNS).items():
        samples, found = [], 0
        for r in range(1, RUNS + 1):
            started = time.perf_counter()
            page = search.contract_page(db, given(r), None, NOW)
            samples.append((time.perf_counter() - started) * 1000)
            found += len(page["items"])
        p95 = _p95(samples)
        print(f"  {what:28} p50 {statistics.median(samples):6.1f} ms  p95 {p95:6.1f} ms  "
              f"({found / RUNS:.0f} found a page)")  # fmt: skip
        worst = max(worst, (p95, what))
    samples = []
    for r in range(RUNS):
        started = time.perf_counter()
        counts = search.attention(db, NOW, search.DUE_SOON_DAYS + r % 2)
        samples.append((time.perf_counter() - started) * 1000)
    p95 = _p95(samples)
    print(f"  {'needs-attention counts':28} p50 {statistics.median(samples):6.1f} ms  "
          f"p95 {p95:6.1f} ms  ({counts})")  # fmt: skip
    worst = max(worst, (p95, "needs-attention counts"))
    db.dispose()
    print(f"search {name} {count} contracts: p95 {worst[0]:.0f} ms (slowest: {worst[1]})")
    return worst[0]


def main() -> None:
    run_main(__doc__ or "", "contracts", 1_000_000, measure, backends="postgresql")


if __name__ == "__main__":
    main()
