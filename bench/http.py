"""Benchmark: triggers per second over HTTP against in-process `EscrowEngine.apply()`.

The same realistic mix on both sides, from several concurrent clients (threads): per
contract, an offer with one milestone, accept, fund, submit, request changes, resubmit,
release, with an Idempotency-Key on every mutation, and one read of the milestone. Over
HTTP it runs against `escrowflow serve --no-worker` as its own process on 127.0.0.1
(the clients' CPU shares this machine with the server's). In-process, the threads call
`EscrowEngine.apply()` on the same kind of database. Not a test: it prints figures.

    python bench/http.py [--contracts 200] [--clients 8] [--backend sqlite|postgresql]
                         [--servers 1]

It prints a release's latency p50 and p99, in-process and over HTTP, with one client and
with `--clients`, and the server's CPU per trigger (Linux's per-thread run times, its
writing process's included; the contract's one read is shared among its triggers)
beside that of uvicorn serving
`bench/bare_asgi.py`, one fixed answer, under the same requests: the floor of any app
served this way. With `--servers N` the `--clients` clients are dealt in turn to N API
processes on the one database, as a load balancer deals connections (their CPU is
summed). Its last line is `http/in-process: R` (triggers/s over HTTP divided by
in-process, `--clients` clients). PostgreSQL runs durable, and is stopped at the end.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named http.py: its folder must not shadow the standard library's `http`.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse
import contextlib
import http.client
import itertools
import json
import os
import signal
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

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


Run = tuple[float, list[float]]  # triggers/s, and each release's seconds
# and the server's CPU per trigger in us: every thread's, the event loop's
Served = tuple[float, list[float], tuple[float, float]]


def _percentiles(seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p50 = ordered[len(ordered) // 2]
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms"


def in_process(url: str, contracts: int, clients: int) -> Run:
    settings = Settings(database_url=url)
    engine = EscrowEngine(
        make_engine(settings, pool_size=clients), settings.policy(), SystemClock()
    )
    client, freelancer = Actor.parse(CLIENT), Actor.parse(FREELANCER)
    releases: list[float] = []

    def one() -> None:
        offer = engine.create_contract(client, OFFER, idempotency_key=uuid.uuid4().hex)
        engine.apply("contract", offer["id"], "accept", freelancer, None, uuid.uuid4().hex)
        milestone = offer["created"][1]["id"]
        for event, actor in MIX:
            started = time.perf_counter()
            engine.apply("milestone", milestone, event, Actor.parse(actor), None, uuid.uuid4().hex)
            if event == "release":
                releases.append(time.perf_counter() - started)
        from workflows import views

        views.show(engine.db, "milestone", milestone)

    seconds = run_clients(clients, contracts, one)
    engine.db.dispose()
    return contracts * TRIGGERS_PER_CONTRACT / seconds, releases


def over_http(url: str, contracts: int, clients: int, servers: int = 1) -> Served:
    """The mix against `servers` processes of `escrowflow serve --no-worker` on `url`."""
    settings = Settings(database_url=url)
    db = make_engine(settings)
    token = tokens.create(db, SystemClock().now(), "bench", ["act:client", "act:freelancer"])
    db.dispose()
    command = [sys.executable, "-m", "escrowflow", "serve", "--no-worker", "--port"]
    env = {**os.environ, "ESCROWFLOW_DATABASE_URL": url}
    return _served(command, env, f"Bearer {token['token']}", contracts, clients, servers)


def floor(contracts: int, clients: int) -> Served:
    """The same requests against uvicorn serving `bench/bare_asgi.py` (one fixed answer)."""
    command = [sys.executable, "-m", "uvicorn", "bench.bare_asgi:app", "--no-access-log"]
    command += ["--log-level", "warning", "--port"]
    return _served(command, dict(os.environ), "Bearer bare", contracts, clients)


def _server_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds the server `pid` has run: every thread of it and of its child processes
    (on SQLite, the process its writes run in), and its main thread (the event loop's),
    from Linux's scheduler (ns)."""
    ran = {
        stat.parent.name: int(stat.read_text().split()[0]) / 1e9
        for stat in Path(f"/proc/{pid}/task").glob("*/schedstat")
    }
    children = (
        int(child)
        for listed in Path(f"/proc/{pid}/task").glob("*/children")
        for child in listed.read_text().split()
    )
    return sum(ran.values()) + sum(_server_seconds(c)[0] for c in children), ran.get(str(pid), 0.0)


def _served(
    command: list[str],
    env: dict[str, str],
    auth: str,
    contracts: int,
    clients: int,
    servers: int = 1,
) -> Served:
    ports = [free_port() for _ in range(servers)]
    started = [
        subprocess.Popen(
            [*command, str(port)],
            env=env,
            cwd=Path(__file__).resolve().parent.parent,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    releases: list[float] = []
    try:
        for port in ports:
            _wait(f"http://127.0.0.1:{port}")
        local = threading.local()
        dealt = itertools.count()

        def connected() -> http.client.HTTPConnection:
            # The stdlib's keep-alive connection, one per client thread: the load generator
            # costs a fifth of httpx's CPU per request, so on two cores the figures are the
            # server's, not the client's. Client threads are dealt to the servers in turn,
            # as a load balancer deals connections.
            if not hasattr(local, "connection"):
                port = ports[next(dealt) % len(ports)]
                local.connection = http.client.HTTPConnection("127.0.0.1", port)
            connection: http.client.HTTPConnection = local.connection
            return connection

        def call(method: str, path: str, headers: dict[str, str], body: bytes | None) -> Any:
            connection = connected()
            connection.request(method, path, body, {"Authorization": auth, **headers})
            response = connection.getresponse()
            data = response.read()
            if response.status >= 300:
                raise RuntimeError(f"{path}: {response.status} {data!r}")
            return json.loads(data)

        def post(path: str, actor: str, body: object = None) -> dict[str, object]:
            headers = {"Escrowflow-Actor": actor, "Idempotency-Key": uuid.uuid4().hex}
            raw = None
            if body is not None:
                raw = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            answer: dict[str, object] = call("POST", path, headers, raw)
            return answer

        def one() -> None:
            offer = post("/v1/contracts", CLIENT, OFFER)
            post(f"/v1/contracts/{offer['id']}/events/accept", FREELANCER)
            milestone = offer["created"][1]["id"]  # type: ignore[index]
            for event, actor in MIX:
                started = time.perf_counter()
                post(f"/v1/milestones/{milestone}/events/{event}", actor)
                if event == "release":
                    releases.append(time.perf_counter() - started)
            call("GET", f"/v1/milestones/{milestone}", {}, None)

        before = [_server_seconds(server.pid) for server in started]
        seconds = run_clients(clients, contracts, one)
        after = [_server_seconds(server.pid) for server in started]
    finally:
        for server in started:
            server.send_signal(signal.SIGTERM)
        for server in started:
            server.wait(30)
    per = 1e6 / (contracts * TRIGGERS_PER_CONTRACT)
    spent = [(a[0] - b[0], a[1] - b[1]) for a, b in zip(after, before, strict=True)]
    cpu = (sum(every for every, _ in spent) * per, sum(loop for _, loop in spent) * per)
    return contracts * TRIGGERS_PER_CONTRACT / seconds, releases, cpu


def _wait(base: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("the server did not start")


def database(where: Any, name: str) -> str:
    """A fresh, migrated database: a SQLite file in the directory `where`, or one on the
    PostgreSQL cluster `where` (durable, as a user's server is)."""
    url = f"sqlite:///{where}/{name}.db" if isinstance(where, Path) else where.create_database(name)
    db = make_engine(Settings(database_url=url))
    upgrade(db)
    db.dispose()
    return url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contracts", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--servers", type=int, default=1, help="API processes on the one database (8 clients)"
    )
    args = parser.parse_args()
    ratios = []
    cpus: list[tuple[float, float, float]] = []
    latencies: dict[tuple[str, int], list[float]] = {}
    # Rounds alternate the two sides, each on a fresh database: this machine's fsync
    # times drift, and the median of paired rounds is steadier than one long run.
    with contextlib.ExitStack() as held:
        where: Any = Path(held.enter_context(tempfile.TemporaryDirectory()))
        if args.backend == "postgresql":  # one server for the run, stopped at its end
            from tests.pg import Cluster

            where = Cluster(durable=True)
            where.start()
            held.callback(where.stop)
        for n in range(args.rounds):
            for clients in (1, args.clients):
                count = args.contracts if clients > 1 else max(20, args.contracts // 4)
                direct, near = in_process(database(where, f"direct{n}_{clients}"), count, clients)
                servers = args.servers if clients > 1 else 1
                remote, far, cpu = over_http(
                    database(where, f"http{n}_{clients}"), count, clients, servers
                )
                latencies.setdefault(("in-process", clients), []).extend(near)
                latencies.setdefault(("over HTTP", clients), []).extend(far)
                line = (
                    f"round {n + 1}, {clients} clients: in-process {direct:.0f} triggers/s, "
                    f"over HTTP {remote:.0f} triggers/s: {remote / direct:.2f}"
                )
                if clients == args.clients:
                    ratios.append(remote / direct)
                    bare, _, bare_cpu = floor(count, clients)
                    cpus.append((*cpu, bare_cpu[0]))
                    line += (
                        f"; server CPU a trigger {cpu[0]:.0f} us (event loop {cpu[1]:.0f}), "
                        f"uvicorn alone {bare_cpu[0]:.0f} us ({bare:.0f}/s)"
                    )
                print(line, flush=True)
    for clients in (1, args.clients):
        near, far = latencies[("in-process", clients)], latencies[("over HTTP", clients)]
        print(
            f"release, {clients} clients: in-process {_percentiles(near)}; over HTTP "
            f"{_percentiles(far)}; HTTP p50 / in-process p50: "
            f"{statistics.median(far) / statistics.median(near):.2f}"
        )
    api, loop, bare = (statistics.median(c[k] for c in cpus) for k in range(3))
    print(
        f"server CPU a trigger, {args.clients} clients (medians): the API {api:.0f} us "
        f"(its event loop's thread {loop:.0f}), uvicorn alone with a fixed answer {bare:.0f} us"
    )
    print(f"http/in-process: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
