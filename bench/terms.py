"""Benchmark: a terms migration (TM2) of N running contracts: the plan's time and the
apply's. Not a test: it prints figures.

N contracts are seeded under review under 14-day terms (auto-approval due in 13 days);
the deployment's settings then say 10 days. The plan moves every auto-approval 4 days
earlier; applying it moves each contract in a transaction of its own, with its history,
event and rescheduled reminders.

    python bench/terms.py [--contracts 10000] [--backends postgresql,sqlite]

Its last lines: `terms <backend>: plan P s, apply A s (N contracts)`; targets on
PostgreSQL: plan < 2 s, apply < 30 s for 10,000.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/http.py would shadow the standard library's `http` for every script in here.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import time
from datetime import UTC, datetime, timedelta

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.backends import run_main
from escrowflow.settings import Settings
from storage.db import make_engine
from storage.migrate import upgrade
from tests.seed import seed_due_auto_approvals
from workflows.actors import Actor, Role
from workflows.clock import ManualClock
from workflows.engine import EscrowEngine
from workflows.policy import DEFAULT_DURATIONS, Policy

ADMIN = Actor(Role.ADMIN, "disputes")
RESULTS: dict[str, tuple[float, float, int]] = {}


def measure(name: str, url: str, contracts: int) -> float:
    settings = Settings(database_url=url, sqlite_synchronous="FULL")
    db = make_engine(settings)
    upgrade(db)
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    print(f"{name}: seeding {contracts:,} contracts under review ...", flush=True)
    seed_due_auto_approvals(db, contracts, clock.now() + timedelta(days=13))
    old = EscrowEngine(db, Policy(), clock).terms.current()  # the seeded contracts get it
    shorter = {**DEFAULT_DURATIONS, "review_window": timedelta(days=10)}
    engine = EscrowEngine(db, Policy(durations=shorter), clock)
    new = engine.terms.current()
    started = time.perf_counter()
    plan = engine.plan_terms(ADMIN, new.id, {"terms_id": old.id})
    planned = time.perf_counter() - started
    assert plan["contracts"] == contracts and plan["deadlines"] == contracts, plan
    print(f"  plan: {planned:.2f} s ({plan['deadlines']:,} deadlines)", flush=True)

    def progress(done: int, total: int) -> None:
        if done % 2_000 == 0:
            print(f"  applied {done:,}/{total:,}", flush=True)

    started = time.perf_counter()
    result = engine.apply_terms_plan(ADMIN, plan["id"], "bench", on_progress=progress)
    applied = time.perf_counter() - started
    assert result["moved"] == contracts, result
    print(f"  apply: {applied:.2f} s ({contracts / applied:,.0f} contracts/s)", flush=True)
    RESULTS[name] = (planned, applied, contracts)
    engine.close()
    return applied


def main() -> None:
    run_main(__doc__ or "", "contracts", 10_000, measure)
    for name, (planned, applied, count) in RESULTS.items():
        print(f"terms {name}: plan {planned:.2f} s, apply {applied:.2f} s ({count:,} contracts)")


if __name__ == "__main__":
    main()
