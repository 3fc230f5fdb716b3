"""Benchmark: an incident freeze (DL4) of N deadlines and its thaw: the preview's time,
the apply's, both ways. Not a test: it prints figures.

N contracts are seeded under review, their auto-approvals due in 13 days; the freeze
pauses every auto-approval of their client, the thaw (its undo) resumes them, as the
worker's job does it (`run_bulk`: chunks of `BULK_CHUNK` deadlines, a transaction each,
`BULK_THREADS` at a time).

    python bench/bulk.py [--deadlines 100000] [--backends postgresql,sqlite]

Its last lines: `bulk <backend>: preview P s, pause A s, resume R s (N deadlines)`;
the target on PostgreSQL: 100,000 paused and resumed in under a minute.
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
from workflows.policy import Policy

ADMIN = Actor(Role.ADMIN, "disputes")
RESULTS: dict[str, tuple[float, float, float, int]] = {}


def measure(name: str, url: str, count: int) -> float:
    db = make_engine(Settings(database_url=url, sqlite_synchronous="FULL"))
    upgrade(db)
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    print(f"{name}: seeding {count:,} deadlines ...", flush=True)
    seed_due_auto_approvals(db, count, clock.now() + timedelta(days=13))
    engine = EscrowEngine(db, Policy(reminders={}), clock)

    def progress(done: int, total: int) -> None:
        if done % 20_000 == 0:
            print(f"  {done:,}/{total:,}", flush=True)

    started = time.perf_counter()
    freeze = engine.preview_bulk(ADMIN, "pause", {"client_id": "acme", "events": ["auto_approve"]})
    previewed = time.perf_counter() - started
    assert freeze["deadlines"] == count, freeze["deadlines"]
    print(f"  preview: {previewed:.2f} s", flush=True)
    started = time.perf_counter()
    engine.apply_bulk(ADMIN, freeze["id"], "bench freeze", on_progress=progress)
    paused = time.perf_counter() - started
    print(f"  pause: {paused:.1f} s ({count / paused:,.0f} deadlines/s)", flush=True)
    thaw = engine.undo_bulk(ADMIN, freeze["id"])
    started = time.perf_counter()
    engine.apply_bulk(ADMIN, thaw["id"], "bench thaw", on_progress=progress)
    resumed = time.perf_counter() - started
    print(f"  resume: {resumed:.1f} s ({count / resumed:,.0f} deadlines/s)", flush=True)
    RESULTS[name] = (previewed, paused, resumed, count)
    engine.close()
    return paused + resumed


def main() -> None:
    run_main(__doc__ or "", "deadlines", 100_000, measure)
    for name, (previewed, paused, resumed, count) in RESULTS.items():
        print(
            f"bulk {name}: preview {previewed:.2f} s, pause {paused:.1f} s, "
            f"resume {resumed:.1f} s ({count:,} deadlines)"
        )


if __name__ == "__main__":
    main()
