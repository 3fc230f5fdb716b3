"""Benchmark: triggers per second over HTTP against in-process `EscrowEngine.apply()`.

The same realistic mix on both sides, from several concurrent clients (threads): per
contract, an offer with one milestone, accept, fund, submit, request changes, resubmit,
release, with an Idempotency-Key on every mutation, and one read of the milestone. Over
HTTP it runs against `escrowflow serve --no-worker` as its own process on 127.0.0.1
(the clients' CPU shares this machine with the server's). In-process, the threads call
`EscrowEngine.apply()` on the same kind of database. Not a test: it prints figures.

    python bench/http.py [--contracts 200] [--clients 8] [--backend sqlite|postgresql]

Its last line is `http/in-process: R` (triggers/s over HTTP divided by in-process).
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named http.py: its folder must not shadow the standard library's `http`.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse
import os
import signal
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import transitions
from escrowflow import tokens
from escrowflow.settings import Settings
from storage.db import make_engine
from storage.migrate import upgrade
from tests.live import free_port
from workflows.actors import Actor
from workflows.clock import SystemClock
from workflows.engine import EscrowEngine

CLIENT, FREELANCER = "client:acme", "freelancer:ada"
OFFER = {
    "freelancer_id": "ada",
    "title": "bench",
    "currency": "USD",
    "milestones": [{"title": "m", "amount": 10_000}],
}
# The milestone mix of bench/transitions.py, with its actors as Escrowflow-Actor headers.
MIX = [(event, f"{actor.role.value}:{actor.party}") for event, actor in transitions.MIX]
TRIGGERS_PER_CONTRACT = 2 + len(MIX)  # offer, accept, the mix


def run_clients(clients: int, contracts: int, one: Callable[[], None]) -> float:
    """Run `one` contract's life `contracts` times over `clients` threads: seconds."""
    remaining = [contracts]
    lock = threading.Lock()
    errors: list[BaseException] = []

    def client() -> None:
        while True:
            with lock:
                if remaining[0] == 0:
                    return
                remaining[0] -= 1
            try:
                one()
            except BaseException as exc:  # report, don't hang
                errors.append(exc)
                return

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - start


def in_process(url: str, contracts: int, clients: int) -> float:
    settings = Settings(database_url=url)
    engine = EscrowEngine(
        make_engine(settings, pool_size=clients), settings.policy(), SystemClock()
    )
    client, freelancer = Actor.parse(CLIENT), Actor.parse(FREELANCER)

    def one() -> None:
        offer = engine.create_contract(client, OFFER, idempotency_key=uuid.uuid4().hex)
        engine.apply("contract", offer["id"], "accept", freelancer, None, uuid.uuid4().hex)
        milestone = offer["created"][1]["id"]
        for event, actor in MIX:
            engine.apply("milestone", milestone, event, Actor.parse(actor), None, uuid.uuid4().hex)
        from workflows import views

        views.show(engine.db, "milestone", milestone)

    seconds = run_clients(clients, contracts, one)
    engine.db.dispose()
    return contracts * TRIGGERS_PER_CONTRACT / seconds


def over_http(url: str, contracts: int, clients: int) -> float:
    settings = Settings(database_url=url)
    db = make_engine(settings)
    token = tokens.create(db, SystemClock().now(), "bench", ["act:client", "act:freelancer"])
    db.dispose()
    port = free_port()
    env = {**os.environ, "ESCROWFLOW_DATABASE_URL": url}
    server = subprocess.Popen(
        [sys.executable, "-m", "escrowflow", "serve", "--no-worker", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(base)
        local = threading.local()

        def http() -> httpx.Client:
            if not hasattr(local, "client"):
                local.client = httpx.Client(
                    base_url=base, headers={"Authorization": f"Bearer {token['token']}"}
                )
            client: httpx.Client = local.client
            return client

        def post(path: str, actor: str, body: object = None) -> dict[str, object]:
            headers = {"Escrowflow-Actor": actor, "Idempotency-Key": uuid.uuid4().hex}
            response = http().post(path, json=body, headers=headers)
            if response.status_code >= 300:
                raise RuntimeError(f"{path}: {response.status_code} {response.text}")
            answer: dict[str, object] = response.json()
            return answer

        def one() -> None:
            offer = post("/v1/contracts", CLIENT, OFFER)
            post(f"/v1/contracts/{offer['id']}/events/accept", FREELANCER)
            milestone = offer["created"][1]["id"]  # type: ignore[index]
            for event, actor in MIX:
                post(f"/v1/milestones/{milestone}/events/{event}", actor)
            http().get(f"/v1/milestones/{milestone}").raise_for_status()

        seconds = run_clients(clients, contracts, one)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    return contracts * TRIGGERS_PER_CONTRACT / seconds


def _wait(base: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("the server did not start")


def database(backend: str, tmp: Path, name: str) -> str:
    if backend == "sqlite":
        url = f"sqlite:///{tmp}/{name}.db"
    else:
        from tests.pg import Cluster

        cluster = Cluster()
        cluster.start()
        url = cluster.create_database(name)
    upgrade(make_engine(Settings(database_url=url)))
    return url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contracts", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    ratios = []
    # Rounds alternate the two sides, each on a fresh database: this machine's fsync
    # times drift, and the median of paired rounds is steadier than one long run.
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.rounds):
            here = database(args.backend, Path(tmp), f"direct{n}")
            direct = in_process(here, args.contracts, args.clients)
            remote = over_http(
                database(args.backend, Path(tmp), f"http{n}"), args.contracts, args.clients
            )
            ratios.append(remote / direct)
            print(
                f"round {n + 1}: in-process {direct:.0f} triggers/s, over HTTP {remote:.0f} "
                f"triggers/s ({args.clients} clients): {remote / direct:.2f}",
                flush=True,
            )
    print(f"http/in-process: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
