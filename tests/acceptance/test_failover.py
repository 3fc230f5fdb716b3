"""Losing the database server (issue 26): a primary and a streaming standby on this
machine, an API process and a worker on the cluster's several-host URL, HTTP traffic with
idempotency keys and a worker draining due auto-approvals; the primary is killed
(SIGKILL to every one of its processes) mid-burst and the standby promoted.

Synchronous replication (`synchronous_standby_names`, `synchronous_commit=on`): every
request answered 2xx before the kill is on the new primary, the clients' retries of the
others land exactly once, no deadline fires twice, and each contract's money equals the
reference model's. Asynchronous: what was acknowledged after the standby fell behind is
lost (its WAL receiver is stopped, then the primary dies), which the deployment guide
(docs/deployment.md) states. In both, the API and the worker carry on without a restart,
and /readyz and `escrowflow status` name the new primary and its new timeline.
"""

from __future__ import annotations

import os
import threading
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine as DBEngine

from storage.db import make_engine
from storage.migrate import upgrade
from storage.models import (
    CONTRACTS,
    DEADLINES,
    HISTORY,
    LEDGER,
    MILESTONES,
    OUTBOX,
    metadata,
)
from tests.helpers import check_invariants
from tests.model.escrow import Model
from tests.pg import REPLICATION, Cluster
from tests.receivers import Receiver
from tests.seed import seed_due_auto_approvals
from tests.served import START, Caller, Server

pytestmark = [pytest.mark.slow, pytest.mark.postgresql_only]

SEEDED = 2_000  # due auto-approvals the worker is draining when the primary dies
AMOUNT = 10_000
LEASE_SECONDS = 5
THREADS = 4


@dataclass
class Traffic:
    """Services calling the API on threads, each making contracts one after another
    (offer, accept, fund, submit) until told to stop; every request retried with its
    Idempotency-Key until it is answered 2xx."""

    caller: Caller
    stop: threading.Event = field(default_factory=threading.Event)
    acked: list[tuple[str, float]] = field(default_factory=list)  # (key, when answered 2xx)
    errors: list[int] = field(default_factory=list)  # the statuses of failed attempts (0: none)
    unexpected: list[str] = field(default_factory=list)  # an answer that is not 2xx or 503
    lock: threading.Lock = field(default_factory=threading.Lock)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for n in range(THREADS):
            thread = threading.Thread(target=self._run, args=(n,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)
            assert not thread.is_alive()

    def _run(self, n: int) -> None:
        chain = 0
        while not self.stop.is_set():
            chain += 1
            key = f"t{n}-c{chain}"
            offer = {"freelancer_id": "ada", "title": key, "currency": "USD",
                     "milestones": [{"title": "Design", "amount": AMOUNT}]}  # fmt: skip
            made = self._post("/v1/contracts", "client:acme", offer, f"{key}-offer")
            if made is None:
                continue
            contract = made["id"]
            (m,) = [c["id"] for c in made["created"] if c["entity"] == "milestone"]
            steps = [
                (f"/v1/contracts/{contract}/events/accept", "freelancer:ada", "accept"),
                (f"/v1/milestones/{m}/events/fund", "client:acme", "fund"),
                (f"/v1/milestones/{m}/events/submit", "freelancer:ada", "submit"),
            ]
            for path, party, name in steps:
                if self._post(path, party, None, f"{key}-{name}") is None:
                    break  # its contract is gone (asynchronous replication lost it)

    def _post(self, path: str, party: str, body: Any, key: str) -> Any:
        """The 2xx answer's JSON, retrying a 503 or a broken connection with the same key
        (None: refused otherwise, recorded in `unexpected`)."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                answer = self.caller.http.post(
                    path, json=body, timeout=30,
                    headers={"Escrowflow-Actor": party, "Idempotency-Key": key},
                )  # fmt: skip
            except httpx.TransportError:
                status = 0
            else:
                if answer.status_code in (200, 201):
                    with self.lock:
                        self.acked.append((key, time.monotonic()))
                    return answer.json()
                status = answer.status_code
                # During the switch: 503 with a retry hint, never a 500.
                if status != 503 or not answer.headers.get("Retry-After"):
                    with self.lock:
                        self.unexpected.append(f"{key}: {status} {answer.text[:200]}")
                    return None
            with self.lock:
                self.errors.append(status)
            time.sleep(0.05)
        with self.lock:
            self.unexpected.append(f"{key}: no 2xx within 60 s")
        return None


def _count(db: DBEngine, query: sa.Select[Any]) -> int:
    with db.connect() as conn:
        return int(conn.execute(query).scalar_one())


def _fired(db: DBEngine) -> int:
    return _count(db, sa.select(sa.func.count()).where(DEADLINES.c.status == "fired"))


def _wait(check: Any, what: str, traffic: Traffic | None = None, seconds: float = 120) -> None:
    """Until `check()` holds (state, not a delay); the bound only ends a hung test."""
    deadline = time.monotonic() + seconds
    while not check():
        refused = traffic.unexpected[-3:] if traffic else []
        assert time.monotonic() < deadline, f"timed out waiting for {what}; refused: {refused}"
        time.sleep(0.05)


def _database_url(*clusters: Cluster) -> str:
    """libpq's several-host form, as an operator writes it: the standby first, so a
    connection must pass over a server that takes no writes to reach the primary."""
    hosts = ",".join(str(c.socket).replace("/", "%2F") for c in clusters)
    return f"postgresql://postgres@{hosts}/escrowflow?target_session_attrs=read-write"


def _settings(url: str) -> Any:
    return types.SimpleNamespace(database_url=url, sqlite_synchronous="FULL")


@pytest.fixture
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[Cluster, Cluster]]:
    """A primary and its standby, synchronous or not; migrated, with a due backlog."""
    synchronous = request.param == "synchronous"
    primary = Cluster(durable=True, settings=REPLICATION)
    standby: Cluster | None = None
    try:
        primary.start()
        setup = make_engine(_settings(primary.create_database("escrowflow")))
        upgrade(setup)
        seed_due_auto_approvals(setup, SEEDED, START - timedelta(hours=1), amount=AMOUNT)
        with setup.begin() as conn:  # the seeded rows took ids by hand: sequences go on
            for table in (t for t in metadata.sorted_tables if "id" in t.c):
                if isinstance(table.c.id.type, sa.Integer) and table.c.id.autoincrement:
                    conn.exec_driver_sql(
                        f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                        f"coalesce((SELECT max(id) FROM {table.name}), 0) + 1, false)"
                    )
        standby = primary.standby()
        if synchronous:  # from now on a commit waits until the standby has it on disk
            with setup.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("ALTER SYSTEM SET synchronous_standby_names = 'standby'")
                conn.exec_driver_sql("SELECT pg_reload_conf()")
                _wait(lambda: conn.exec_driver_sql(
                    "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'"
                ).scalar_one() == 1, "the standby to be synchronous")  # fmt: skip
        setup.dispose()
        yield primary, standby
    finally:
        if standby is not None:
            standby.stop()
        primary.stop()


def _modelled() -> tuple[int, int, int, int]:
    """The reference model's figures for one contract of this run (each, made over HTTP
    or seeded, is the same lifecycle: offered, accepted, funded, submitted, then left
    past its review window, MS10): deposited, paid to the freelancer, refunded, held."""
    model = Model(now=(START - timedelta(days=14, hours=1)).replace(tzinfo=None))
    payload = {"freelancer": "ada", "milestones": [{"title": "Design", "amount": AMOUNT}]}
    created = dict(model.offer("acme", payload))
    model.act("freelancer", "ada", "contract", created["contract"], "accept", {})
    model.act("client", "acme", "milestone", created["milestone"], "fund", {})
    model.act("freelancer", "ada", "milestone", created["milestone"], "submit", {})
    model.advance((START + timedelta(days=15)).replace(tzinfo=None))
    c = model.get("contract", created["contract"])
    return c["deposited"], c["released"], c["refunded"], model.held(c)


def _audit(db: DBEngine, offers: list[str]) -> None:
    """ES1, ES2, and every contract's money as the reference model has it: deposited,
    paid to the freelancer, held; no cent lost or doubled."""
    check_invariants(db)
    with db.connect() as conn:
        found = conn.execute(
            sa.select(CONTRACTS.c.deposited, CONTRACTS.c.released, CONTRACTS.c.refunded,
                      CONTRACTS.c.held)
        ).all()  # fmt: skip
    assert len(found) == SEEDED + len(offers)
    expected = _modelled()
    assert [tuple(row) for row in found if tuple(row) != expected] == []


def _exactly_once(db: DBEngine, offers: list[str]) -> None:
    """Each offer made once (its key is its title), each milestone funded and paid once,
    each deadline fired at most once."""
    with db.connect() as conn:
        titles = dict(
            conn.execute(
                sa.select(CONTRACTS.c.title, sa.func.count()).group_by(CONTRACTS.c.title)
            ).all()
        )
        per_milestone = conn.execute(
            sa.select(LEDGER.c.milestone_id, LEDGER.c.kind, sa.func.count())
            .group_by(LEDGER.c.milestone_id, LEDGER.c.kind)
            .having(sa.func.count() > 1)
        ).all()
        twice = conn.execute(
            sa.select(HISTORY.c.deadline_id)
            .where(HISTORY.c.deadline_id.is_not(None), HISTORY.c.entity != "deadline")
            .group_by(HISTORY.c.deadline_id)
            .having(sa.func.count() > 1)
        ).all()
        milestones = _count(db, sa.select(sa.func.count()).select_from(MILESTONES))
    assert all(titles.get(key) == 1 for key in offers), titles
    assert set(titles) == {*offers, "seeded"} and titles["seeded"] == SEEDED
    assert per_milestone == [] and twice == []
    assert milestones == SEEDED + len(offers)


def _switched(server: Server, standby: Cluster, tmp: Path) -> dict[str, Any]:
    """/readyz names the new primary and its timeline; so does `escrowflow status`."""
    ready = httpx.get(f"{server.url}/readyz", timeout=10).json()
    assert ready["status"] == "ready", ready
    assert ready["database"]["timeline"] == 2
    assert ready["database"]["host"].startswith(str(standby.socket))
    return dict(ready["database"])


@pytest.mark.parametrize("pair", ["synchronous"], indirect=True)
def test_a_synchronous_standby_takes_over_and_loses_nothing_acknowledged(
    pair: tuple[Cluster, Cluster], tmp_path: Path
) -> None:
    primary, standby = pair
    url = _database_url(standby, primary)
    db = make_engine(_settings(url))
    settings = {
        "ESCROWFLOW_DATABASE_URL": url,
        "ESCROWFLOW_WORKER_LEASE": str(LEASE_SECONDS),
        "ESCROWFLOW_WORKER_BATCH_SIZE": "50",
        "ESCROWFLOW_WEBHOOK_ALLOW_PRIVATE": "true",
    }
    receiver = Receiver()
    receiver.start()
    api = Server(db, tmp_path, "--no-worker", **settings)
    worker: Server | None = None
    traffic = Traffic(Caller(api, db, "act:client", "act:freelancer", "webhooks"))
    try:
        api.wait_ready()
        before = _switched_from(api, primary)
        # Webhooks of what the worker fires and what the clients submit: deliveries are
        # under way when the primary dies.
        hooks = {"url": receiver.url, "event_types": ["milestone.auto_approve", "milestone.submit"]}
        assert traffic.caller.http.post("/v1/webhooks", json=hooks).status_code == 201
        worker = Server(db, tmp_path, command="worker", **settings)
        worker.wait_started(db)
        traffic.start()
        # Kill mid-burst: requests under way on every thread, the worker mid-drain.
        _wait(lambda: len(traffic.acked) >= 40 and _fired(db) >= 250, "traffic and a drain")
        assert _fired(db) < SEEDED, "the drain ended before the kill: seed more"
        primary.kill()
        killed = time.monotonic()
        with traffic.lock:
            answered = {key for key, when in traffic.acked if when < killed}
        standby.promote()
        promoted = time.monotonic()
        db.dispose()  # the test's own connections: to the dead server
        # The API and the worker find the new primary by themselves.
        _wait(lambda: any(t > promoted for _, t in traffic.acked), "a 2xx", traffic)
        first = min(when for _, when in traffic.acked if when > killed)
        traffic.finish()
        assert traffic.unexpected == []
        # Claims made on the old primary are taken over after one lease of database time.
        worker.set_clock(START + timedelta(seconds=LEASE_SECONDS + 1))
        _wait(lambda: _fired(db) == SEEDED, "the seeded backlog drained on the new primary")
        worker.set_clock(START + timedelta(days=15))  # and every review window runs out
        offers = sorted({key.removesuffix("-offer") for key, _ in traffic.acked
                         if key.endswith("-offer")})  # fmt: skip
        _wait(lambda: _fired(db) == SEEDED + len(offers), "every auto-approval fired")
        # Every request answered before the kill is there: each offer once (below), and
        # each fund and submit in its contract's money and state (the audit).
        assert {k.removesuffix("-offer") for k in answered if k.endswith("-offer")} <= set(offers)
        _exactly_once(db, offers)
        _audit(db, offers)
        # No webhook lost: every event owed is delivered, those in flight at the kill again.
        query = sa.select(OUTBOX.c.event_id).where(OUTBOX.c.type.in_(hooks["event_types"]))
        with db.connect() as conn:
            owed = set(conn.execute(query).scalars())
        assert len(owed) == SEEDED + 2 * len(offers)  # a submit and an auto-approval each
        _wait(lambda: owed <= {e["id"] for e in receiver.events()}, "every event delivered")
        received = [e["id"] for e in receiver.events()]
        after = _switched(api, standby, tmp_path)
        assert after["host"] != before["host"]
        assert api.process.poll() is None and worker.process.poll() is None  # no restart
        status = _status(url, tmp_path)
        assert "timeline 2" in status, status
        print(
            f"\nsynchronous: {len(answered)} requests answered before the kill, all kept; "
            f"switch (kill to the first 2xx after it): {first - killed:.2f} s, pg_ctl promote "
            f"returned after {promoted - killed:.2f} s; failed attempts meanwhile: "
            f"{sorted(set(traffic.errors))} ({len(traffic.errors)}); webhooks delivered again "
            f"after the switch: {len(received) - len(set(received))}"
        )
    finally:
        traffic.stop.set()
        traffic.caller.http.close()
        api.kill()
        if worker is not None:
            worker.kill()
        receiver.close()
        db.dispose()


@pytest.mark.parametrize("pair", ["asynchronous"], indirect=True)
def test_an_asynchronous_standby_loses_what_it_had_not_received(
    pair: tuple[Cluster, Cluster], tmp_path: Path
) -> None:
    primary, standby = pair
    url = _database_url(standby, primary)
    db = make_engine(_settings(url))
    api = Server(db, tmp_path, "--no-worker", ESCROWFLOW_DATABASE_URL=url)
    traffic = Traffic(Caller(api, db, "act:client", "act:freelancer"))
    try:
        api.wait_ready()
        _switched_from(api, primary)
        standby.disconnect()  # the standby falls behind from here (a partition)
        stalled = time.monotonic()
        traffic.start()
        _wait(lambda: len(traffic.acked) >= 40, "requests answered while the standby lags")
        primary.kill()
        killed = time.monotonic()
        # No server takes writes: not ready, metrics say so, neither is a 500.
        away = httpx.get(f"{api.url}/readyz", timeout=10)
        assert (away.status_code, away.json()["status"]) == (503, "database_unavailable")
        metrics = httpx.get(f"{api.url}/metrics", timeout=10)
        assert metrics.status_code == 200 and "escrowflow_database_up 0.0" in metrics.text
        standby.promote()
        db.dispose()
        _wait(lambda: any(when > killed for _, when in traffic.acked), "a 2xx", traffic)
        assert "escrowflow_database_up 1.0" in httpx.get(f"{api.url}/metrics", timeout=10).text
        traffic.finish()
        # Later requests on a contract that is gone are refused (404), nothing else.
        assert all(": 404 " in refused for refused in traffic.unexpected), traffic.unexpected
        lagging = {key for key, when in traffic.acked if stalled < when < killed}
        with db.connect() as conn:
            titles = set(conn.execute(sa.select(CONTRACTS.c.title)).scalars())
        lost = {key for key in lagging if key.endswith("-offer")} - {
            f"{title}-offer" for title in titles
        }
        # Asynchronous: every offer acknowledged after the standby stopped receiving is
        # gone, though its client was told it was made (the guide says so).
        assert lost and lost == {key for key in lagging if key.endswith("-offer")}
        check_invariants(db)  # what is there is whole: ES1, ES2, histories
        _switched(api, standby, tmp_path)
        print(f"\nasynchronous: {len(lagging)} acknowledged requests lost, {len(lost)} offers")
    finally:
        traffic.stop.set()
        traffic.caller.http.close()
        api.kill()
        db.dispose()


def _switched_from(server: Server, primary: Cluster) -> dict[str, Any]:
    ready = httpx.get(f"{server.url}/readyz", timeout=10).json()
    assert ready["status"] == "ready" and ready["database"]["timeline"] == 1, ready
    assert ready["database"]["host"].startswith(str(primary.socket))
    return dict(ready["database"])


def _status(url: str, tmp: Path) -> str:
    import subprocess
    import sys

    env = {**os.environ, "ESCROWFLOW_DATABASE_URL": url}
    done = subprocess.run(
        [sys.executable, "-m", "escrowflow", "status"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("pair", ["asynchronous"], indirect=True)
def test_lists_and_the_forecast_may_read_a_replica_and_decisions_never_do(
    pair: tuple[Cluster, Cluster], tmp_path: Path
) -> None:
    """ESCROWFLOW_READ_DATABASE_URL: with the replica stopped at a moment, what is made
    after it is decided and shown on the primary (the entity, its version, its next
    event), while the contracts list and the forecast, read on the replica, do not have
    it yet."""
    primary, standby = pair
    db = make_engine(_settings(_database_url(primary)))
    api = Server(
        db,
        tmp_path,
        "--no-worker",
        ESCROWFLOW_DATABASE_URL=_database_url(primary),
        ESCROWFLOW_READ_DATABASE_URL=_database_url(standby).replace("read-write", "any"),
    )
    caller = Caller(api, db, "act:client", "act:freelancer", "read")
    try:
        api.wait_ready()
        before, _ = _offer(caller)  # replicated: the replica lists it
        _wait(lambda: before in _listed(caller), "the replica to list the first contract")
        standby.disconnect()  # the replica stays at this moment
        after, milestone = _offer(caller)
        caller.act("freelancer:ada", f"/v1/contracts/{after}/events/accept")
        caller.act("client:globex", f"/v1/milestones/{milestone}/events/fund")
        caller.act("freelancer:ada", f"/v1/milestones/{milestone}/events/submit")
        shown = caller.http.get(f"/v1/milestones/{milestone}").json()
        assert (shown["state"], shown["version"]) == ("in_review", 3)  # the primary's
        assert _listed(caller) == [before]  # the replica's: the second is not there yet
        # The forecast (read on the replica) has the seeded auto-approvals, not this one.
        forecast = caller.http.get("/v1/forecast", params={"days": 30}).json()
        (usd,) = forecast["totals"]
        assert usd["releases"] == SEEDED
    finally:
        caller.http.close()
        api.kill()
        db.dispose()


def _offer(caller: Caller) -> tuple[int, int]:
    """globex offers ada a contract (the seeded ones are acme's): (contract, milestone)."""
    body = {"freelancer_id": "ada", "title": "Shop", "currency": "USD",
            "milestones": [{"title": "Design", "amount": AMOUNT}]}  # fmt: skip
    made = caller.act("client:globex", "/v1/contracts", body)
    (m,) = [c["id"] for c in made["created"] if c["entity"] == "milestone"]
    return int(made["id"]), int(m)


def _listed(caller: Caller) -> list[int]:
    page = caller.http.get("/v1/contracts", params={"client_id": "globex"}).json()
    return [c["id"] for c in page["items"]]
