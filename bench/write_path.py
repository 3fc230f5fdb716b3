"""Benchmark: the write path, chosen by measurement (docs/architecture.md).

The statements one transition writes (a history row, an update of the entity, an event),
issued through SQLAlchemy Core's `Connection.execute` and through `storage.statements.Writes`
(the same statements, compiled once, run on the DBAPI cursor), side by side on the same
database, one transaction per "transition". Not a test: it prints figures.

    python bench/write_path.py [--transitions 3000] [--backends postgresql,sqlite]

Its last line is `writes/core sqlite: R`.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/http.py would shadow the standard library's `http` for every script in here.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import time
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.backends import compare, ratio_main
from escrowflow.settings import Settings
from storage.db import make_engine, transaction
from storage.fastpath import FastPath
from storage.migrate import upgrade
from storage.models import CONTRACTS, HISTORY, OUTBOX
from storage.statements import Statements

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _history(contract_id: int, n: int) -> dict[str, Any]:
    return {
        "contract_id": contract_id,
        "entity": "contract",
        "entity_id": contract_id,
        "event": "bench",
        "from_state": "offer",
        "to_state": "offer",
        "version": n,
        "actor_role": "client",
        "actor_party": "acme",
        "cause": "request",
        "at": NOW,
        "payload": {},
    }


def _event(contract_id: int, n: int) -> dict[str, Any]:
    return {
        "event_id": f"bench-{contract_id}-{n}-{time.perf_counter_ns()}",
        "contract_id": contract_id,
        "type": "contract.bench",
        "entity": "contract",
        "entity_id": contract_id,
        "recipients": ["ada"],
        "at": NOW,
        "data": {"n": n},
    }


def _contract(db: sa.Engine) -> int:
    with transaction(db) as conn:
        return int(
            conn.execute(
                CONTRACTS.insert().values(
                    kind="fixed",
                    client_id="acme",
                    freelancer_id="ada",
                    title="bench",
                    currency="USD",
                    state="offer",
                    version=1,
                    created_at=NOW,
                    updated_at=NOW,
                )
            ).inserted_primary_key[0]  # type: ignore[index]
        )


def core_rate(db: sa.Engine, contract_id: int, transitions: int) -> float:
    started = time.perf_counter()
    for n in range(transitions):
        with transaction(db) as conn:
            history_id = conn.execute(HISTORY.insert().values(**_history(contract_id, n)))
            conn.execute(CONTRACTS.update().where(CONTRACTS.c.id == contract_id).values(version=n))
            event = {**_event(contract_id, n), "history_id": history_id.inserted_primary_key[0]}
            conn.execute(OUTBOX.insert().values(**event))
    return transitions / (time.perf_counter() - started)


def writes_rate(db: sa.Engine, contract_id: int, transitions: int) -> float:
    fast = FastPath(db.dialect)
    started = time.perf_counter()
    for n in range(transitions):
        with transaction(db) as conn:
            w = Statements(fast, conn)
            history_id = w.insert(HISTORY, _history(contract_id, n))
            w.update(CONTRACTS, contract_id, {"version": n})
            w.append(OUTBOX, {**_event(contract_id, n), "history_id": history_id})
    return transitions / (time.perf_counter() - started)


def measure(name: str, url: str, transitions: int) -> float:
    db = make_engine(Settings(database_url=url))
    upgrade(db)
    contract_id = _contract(db)
    # Interleaved halves, so a noisy moment does not land on one side only.
    core = writes = 0.0
    for _ in range(2):
        core += core_rate(db, contract_id, transitions // 2) / 2
        writes += writes_rate(db, contract_id, transitions // 2) / 2
    db.dispose()
    print(f"{name}: {transitions} transitions of 3 statements each, one transaction each")
    return compare(("writes", writes), ("core", core))


def main() -> None:
    ratio_main(__doc__ or "", "transitions", 3000, measure, "writes/core")


if __name__ == "__main__":
    main()
