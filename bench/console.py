"""The console's contract inspector for a large contract: 200 milestones, each funded,
submitted and sent back for changes four times before release (about 2,400 history
rows); the server time of its page (target < 300 ms), read and render apart.

    .venv/bin/python -m bench.console [--backends postgresql,sqlite]
    .venv/bin/python -m bench.console search [--contracts 1000000] [--backends postgresql]

Prints `inspector <backend> <milestones> milestones, <history> history rows: <ms> ms`
last, one line a backend (the best of 5 requests, in-process: no network). With
`search`, the contract search and the needs-attention counts instead
(`bench/console_search.py`: target < 200 ms p95 on 1,000,000 contracts on PostgreSQL).
"""

from __future__ import annotations

import sys
import time
import warnings

from bench.backends import timing_main
from escrowflow import tokens
from escrowflow.api.app import create_app
from escrowflow.settings import Settings
from storage.db import make_engine
from storage.models import metadata
from workflows import inspector
from workflows.actors import Actor, Role
from workflows.clock import ManualClock
from workflows.engine import EscrowEngine
from workflows.policy import Policy

CLIENT, FREELANCER = Actor(Role.CLIENT, "acme"), Actor(Role.FREELANCER, "ada")


def _contract(engine: EscrowEngine, milestones: int) -> tuple[int, int]:
    payload = {
        "freelancer_id": "ada",
        "title": "Large",
        "currency": "USD",
        "milestones": [{"title": f"M{i}", "amount": 1_000 + i} for i in range(milestones)],
    }
    created = engine.create_contract(CLIENT, payload)
    contract = created["id"]
    engine.apply("contract", contract, "accept", FREELANCER)
    transitions = 2 + milestones
    for m in [c["id"] for c in created["created"] if c["entity"] == "milestone"]:
        engine.apply("milestone", m, "fund", CLIENT)
        for _ in range(4):
            engine.apply("milestone", m, "submit", FREELANCER)
            engine.apply("milestone", m, "request_changes", CLIENT)
        engine.apply("milestone", m, "submit", FREELANCER)
        engine.apply("milestone", m, "release", CLIENT)
        transitions += 11
    return contract, transitions


def measure(name: str, url: str, milestones: int) -> float:
    from fastapi.testclient import TestClient

    settings = Settings(database_url=url, api_token_cache_seconds=0)
    db = make_engine(settings)
    metadata.create_all(db)
    clock = ManualClock()
    engine = EscrowEngine(db, Policy(), clock)
    started = time.perf_counter()
    contract, history = _contract(engine, milestones)
    print(f"{name}: seeded {history} transitions in {time.perf_counter() - started:.1f} s")
    read = []
    for _ in range(5):
        started = time.perf_counter()
        inspector.contract_page(db, contract)
        read.append(time.perf_counter() - started)
    token = tokens.create(db, clock.now(), "bench", ["read"])["token"]
    app = create_app(settings, engine=engine)
    timings = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the test client's own deprecation notice
        client = TestClient(app)
    with client:
        client.get("/console/login")  # its CSRF cookie
        csrf = client.cookies.get("escrowflow_console_login")
        client.post("/console/login", data={"token": token, "csrf": csrf})
        for _ in range(5):
            started = time.perf_counter()
            answer = client.get(f"/console/contracts/{contract}")
            timings.append(time.perf_counter() - started)
            assert answer.status_code == 200 and answer.text.count('id="milestone-') == milestones
    print(
        f"{name}: read {min(read) * 1000:.0f} ms, whole page {min(timings) * 1000:.0f} ms "
        f"({len(answer.text) // 1024} KiB of HTML)"
    )
    db.dispose()
    return min(timings) * 1000


def main() -> None:
    if sys.argv[1:2] == ["search"]:
        from bench import console_search

        del sys.argv[1]
        console_search.main()
        return
    timing_main(
        __doc__ or "",
        "milestones",
        200,
        measure,
        lambda name, n, ms: (
            f"inspector {name} {n} milestones, {2 + n * 12} history rows: {ms:.0f} ms"
        ),
    )


if __name__ == "__main__":
    main()
