"""Benchmark: persisted transitions per second through `EscrowEngine.apply()`.

A realistic mix per milestone (fund, submit, request changes, resubmit, release), against
a baseline on the same database and settings: SQLAlchemy Core doing only "select the
row, update it, insert a history row, commit". Not a test: it prints figures.

    python bench/transitions.py [--milestones 600] [--backends postgresql,sqlite]

In three rounds that alternate the two sides; its last line is `engine/baseline sqlite: R`,
the median of the rounds' ratios.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/http.py would shadow the standard library's `http` for every script in here.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import statistics
import time

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.backends import compare, ratio_main
from escrowflow.settings import Settings
from storage.db import make_engine
from storage.migrate import upgrade
from workflows.actors import Actor, Role
from workflows.clock import ManualClock
from workflows.engine import EscrowEngine

CLIENT = Actor(Role.CLIENT, "acme")
FREELANCER = Actor(Role.FREELANCER, "ada")
ROUNDS = 3
MIX = [
    ("fund", CLIENT),
    ("submit", FREELANCER),
    ("request_changes", CLIENT),
    ("submit", FREELANCER),
    ("release", CLIENT),
]


def engine_rate(db: sa.Engine, milestones: int) -> float:
    settings = Settings()
    engine = EscrowEngine(db, settings.policy(), ManualClock())
    ids = []
    for _ in range(milestones):
        result = engine.create_contract(
            CLIENT,
            {
                "freelancer_id": "ada",
                "title": "bench",
                "currency": "USD",
                "milestones": [{"title": "m", "amount": 10_000}],
            },
        )
        engine.apply("contract", result["id"], "accept", FREELANCER)
        ids.append(result["created"][1]["id"])
    start = time.perf_counter()
    for milestone in ids:
        for event, actor in MIX:
            engine.apply("milestone", milestone, event, actor)
    return len(ids) * len(MIX) / (time.perf_counter() - start)


def baseline_rate(db: sa.Engine, transitions: int) -> float:
    md = sa.MetaData()
    items = sa.Table(
        "bench_items",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("state", sa.String(40)),
        sa.Column("version", sa.Integer),
    )
    history = sa.Table(
        "bench_history",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("item_id", sa.Integer),
        sa.Column("from_state", sa.String(40)),
        sa.Column("to_state", sa.String(40)),
    )
    md.drop_all(db)
    md.create_all(db)
    rows = 1000
    with db.begin() as conn:
        conn.execute(items.insert(), [{"id": i, "state": "a", "version": 1} for i in range(rows)])
    start = time.perf_counter()
    with db.connect() as conn:
        for n in range(transitions):
            item_id = n % rows
            row = conn.execute(sa.select(items).where(items.c.id == item_id)).one()
            conn.execute(
                items.update()
                .where(items.c.id == item_id)
                .values(state="b", version=row.version + 1)
            )
            conn.execute(
                history.insert().values(item_id=item_id, from_state=row.state, to_state="b")
            )
            conn.commit()
    return transitions / (time.perf_counter() - start)


def measure(name: str, url: str, milestones: int) -> float:
    settings = Settings(database_url=url)
    db = make_engine(settings)
    upgrade(db)
    print(
        f"{name}: {milestones} milestones x {len(MIX)} events "
        f"(sqlite synchronous={settings.sqlite_synchronous})"
        if name == "sqlite"
        else f"{name}: {milestones} milestones x {len(MIX)} events",
        flush=True,
    )
    # Rounds alternate the two sides: this machine's fsync times drift over a run, and
    # the median of paired rounds is steadier than one long run of each.
    ratios = []
    for _ in range(ROUNDS):
        engine_tps = engine_rate(db, milestones // ROUNDS)
        base_tps = baseline_rate(db, milestones // ROUNDS * len(MIX))
        ratios.append(compare(("engine", engine_tps), ("baseline", base_tps)))
    db.dispose()
    return statistics.median(ratios)


def main() -> None:
    ratio_main(__doc__ or "", "milestones", 600, measure, "engine/baseline")


if __name__ == "__main__":
    main()
