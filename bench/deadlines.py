"""Benchmark: the daemon's deadlines. Not a test: it prints figures.

(a) drain N overdue auto-approvals with `escrowflow worker` processes: SQLite with one
    worker, PostgreSQL with one and with four; deadlines/s.
(b) with M pending future deadlines: the time of one sweep that finds nothing due, and
    the worker process's peak RSS.
(c) a steady trickle of deadlines falling due while a worker runs: fire lag p50/p99.
Optionally (d) the same auto-approval drain on DBOS, on SQLite and on the same
    PostgreSQL server, with an interpreter that has `dbos` (--dbos-python, or this one).
(e) the liability forecast over 1,000,000 pending deadlines (bench/forecast.py).
With reminders (NT2) on, as by default, and (a) again with them off, side by side.

    python bench/deadlines.py [--drain 100000] [--pending 1000000] [--trickle 600]

Its last lines: `drain postgresql 1 worker deadlines/s: N, bare: M, ratio: R` (the bare
drain is the floor: a loop claiming and updating the same rows on the same server, in
the same run), with DBOS `drain postgresql 1 worker deadlines/s: N, dbos: M, ratio: R`,
and `drain sqlite deadlines/s: N, dbos: M, ratio: R`; then, against the raw-driver limit
(bench/limit.py: the same rows per fired deadline, batches of 500, the same durability,
run before and after the engine on fresh databases of the same server),
`drain sqlite 1 worker deadlines/s: N, limit: M, ratio: R, cpu/1000 engine: A limit: B`
and the same for PostgreSQL. Rates and CPU seconds per 1,000 deadlines are counted from
the end of start-up for the engine and the limit alike (a worker's imports and
connections are a fixed cost, not a per-deadline one). The PostgreSQL server is durable
(fsync, synchronous_commit, full_page_writes on), as a user's is.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/http.py would shadow the standard library's `http` for every script in here.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import os
import signal
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from escrowflow.settings import Settings
from storage.db import make_engine
from storage.migrate import upgrade
from storage.models import CONTRACTS, DEADLINES, HISTORY, WORKERS
from tests.seed import seed_due_auto_approvals
from workflows.clock import SystemClock
from workflows.engine import EscrowEngine
from workflows.sweeper import Sweeper


def database(url: str) -> sa.Engine:
    db = make_engine(Settings(database_url=url))
    upgrade(db)
    return db


def start_workers(
    url: str, count: int, interval: float = 1.0, reminders: bool = True
) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "ESCROWFLOW_DATABASE_URL": url}
    if not reminders:  # NT2 off; on, each firing also drops its timer's leftover reminders
        env["ESCROWFLOW_REMINDERS"] = "[]"
    return [
        subprocess.Popen(
            [sys.executable, "-m", "escrowflow", "worker", "--interval", str(interval)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
        )
        for _ in range(count)
    ]


def stop(workers: list[subprocess.Popen[bytes]]) -> None:
    for w in workers:
        w.send_signal(signal.SIGTERM)
    for w in workers:
        w.wait(timeout=120)


def seed(db: sa.Engine, count: int) -> None:
    """`count` overdue auto-approvals, and the planner's statistics brought up to date
    (ANALYZE), as autovacuum would have done by the time a real backlog is drained: with
    the empty table's statistics the planner sorts every due row for each claim."""
    seed_due_auto_approvals(db, count, datetime.now(UTC) - timedelta(days=1))
    if db.dialect.name == "postgresql":
        with db.connect() as conn:
            conn.execute(sa.text("ANALYZE"))
            conn.commit()


def pending(db: sa.Engine) -> int:
    with db.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).where(DEADLINES.c.status == "pending")
            ).scalar_one()
        )


def any_pending(db: sa.Engine) -> bool:
    """Cheap, to be asked often: the first pending row of the claim's partial index."""
    with db.connect() as conn:
        query = sa.select(DEADLINES.c.id).where(DEADLINES.c.status == "pending").limit(1)
        return conn.execute(query).first() is not None


def cpu_seconds(pid: int) -> float:
    """User and system CPU a live process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def backend_pids(db: sa.Engine) -> list[int]:
    """The PostgreSQL server processes serving this database's other connections."""
    with db.connect() as conn:
        query = sa.text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
        return list(conn.execute(query).scalars())


def registered(db: sa.Engine, pids: list[int]) -> int:
    """How many of these worker processes have started (their row in `workers`)."""
    with db.connect() as conn:
        query = sa.select(sa.func.count()).where(WORKERS.c.pid.in_(pids))
        return int(conn.execute(query).scalar_one())


def cpu_now(db: sa.Engine, pids: list[int]) -> tuple[dict[int, float], dict[int, float]]:
    """CPU seconds so far of the worker processes and of the database's server processes."""
    workers = {pid: cpu_seconds(pid) for pid in pids}
    servers = (
        {pid: cpu_seconds(pid) for pid in backend_pids(db)}
        if db.dialect.name == "postgresql"
        else {}
    )
    return workers, servers


def spent(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def drain(
    url: str, count: int, workers: int, label: str, reminders: bool = True
) -> tuple[float, float]:
    """Deadlines per second (from launching the workers), and the CPU seconds per 1,000
    deadlines of the workers and the database's server processes after start-up."""
    db = database(url)
    print(f"(a) {label}: seeding {count} overdue auto-approvals ...", flush=True)
    seed(db, count)
    processes = start_workers(url, workers, reminders=reminders)
    pids = [p.pid for p in processes]
    while registered(db, pids) < workers:  # started: imports and connections done
        time.sleep(0.01)
    # Counted from here, as the limit is (bench/limit.py): start-up is a fixed cost.
    started = time.perf_counter()
    ready = cpu_now(db, pids)
    last = time.perf_counter()
    while any_pending(db):
        if time.perf_counter() - last > 10:
            print(f"    {count - pending(db)}/{count} fired", flush=True)
            last = time.perf_counter()
        time.sleep(0.01)  # the end seen within 1 %: the limit times itself exactly
    elapsed = time.perf_counter() - started
    done = cpu_now(db, pids)
    worker_cpu, server_cpu = spent(ready[0], done[0]), spent(ready[1], done[1])
    stop(processes)
    rate = count / elapsed
    print(
        f"    {label}: {count} fired in {elapsed:.1f} s: {rate:.0f} deadlines/s "
        "(after worker start-up)",
        flush=True,
    )
    per = 1000 / count
    print(
        f"    {label}: CPU s per 1,000 deadlines (after start-up): workers "
        f"{worker_cpu * per:.3f}"
        + (
            f", PostgreSQL backends {server_cpu * per:.3f}, "
            f"together {(worker_cpu + server_cpu) * per:.3f}"
            if server_cpu
            else ""
        ),
        flush=True,
    )
    db.dispose()
    return rate, (worker_cpu + server_cpu) * per


def limit_drain(backend: str, url: str, count: int, label: str) -> tuple[float, float]:
    """The raw-driver limit (bench/limit.py) on a fresh database seeded alike: its
    deadlines/s and CPU seconds per 1,000 deadlines (its process and server backend)."""
    db = database(url)
    print(f"(a) limit, {label}: seeding {count} overdue auto-approvals ...", flush=True)
    seed(db, count)
    where = (
        str(db.url.database)
        if backend == "sqlite"
        else f"host={db.url.query['host']} dbname={db.url.database} user={db.url.username}"
    )
    db.dispose()
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "limit.py"), backend, where],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    line = next(x for x in done.stdout.splitlines() if x.startswith("LIMIT"))
    fields = dict(part.split("=") for part in line.split()[1:])
    fired, seconds, cpu = int(fields["fired"]), float(fields["seconds"]), float(fields["cpu"])
    assert fired == count, line
    print(
        f"    limit, {label}: {fired} fired in {seconds:.1f} s: {fired / seconds:.0f} "
        f"deadlines/s; CPU s per 1,000: {cpu * 1000 / fired:.3f}",
        flush=True,
    )
    return fired / seconds, cpu * 1000 / fired


def against_limit(
    backend: str, url_of: Any, count: int, workers: int, label: str
) -> tuple[float, float, float, float]:
    """limit, engine, limit on fresh databases of one server, side by side: the engine's
    rate and CPU per 1,000, and the limit's (the mean of its two runs)."""
    first = limit_drain(backend, url_of("limit_a"), count, f"{label} (before)")
    rate, cpu = drain(url_of("engine"), count, workers, label)
    second = limit_drain(backend, url_of("limit_b"), count, f"{label} (after)")
    return rate, cpu, (first[0] + second[0]) / 2, (first[1] + second[1]) / 2


def bare_drain(url: str, count: int) -> float:
    """The floor: the same overdue rows drained by a bare loop on the same server, no
    engine: claim 500 due rows (FOR UPDATE SKIP LOCKED over the partial index), one
    trivial update per row, commit."""
    db = database(url)
    print(f"(a) bare: seeding {count} overdue auto-approvals ...", flush=True)
    seed(db, count)
    claim = sa.text(
        "SELECT id FROM deadlines WHERE status = 'pending' AND due_at <= now() "
        "ORDER BY due_at LIMIT 500 FOR UPDATE SKIP LOCKED"
    )
    fire = sa.text("UPDATE deadlines SET status = 'fired', closed_at = now() WHERE id = :id")
    started = time.perf_counter()
    done = 0
    with db.connect() as conn:
        while True:
            with conn.begin():
                ids = list(conn.execute(claim).scalars())
                for deadline_id in ids:
                    conn.execute(fire, {"id": deadline_id})
            done += len(ids)
            if not ids:
                break
    rate = done / (time.perf_counter() - started)
    print(f"    bare: {done} fired: {rate:.0f} deadlines/s", flush=True)
    db.dispose()
    return rate


def idle_sweep(url: str, count: int) -> None:
    db = database(url)
    print(f"(b) seeding {count} pending future deadlines ...", flush=True)
    future = datetime.now(UTC) + timedelta(days=30)
    with db.begin() as conn:
        conn.execute(
            CONTRACTS.insert(),
            [
                {
                    "id": 1,
                    "kind": "fixed",
                    "client_id": "acme",
                    "freelancer_id": "ada",
                    "title": "bench",
                    "currency": "USD",
                    "state": "active",
                    "version": 1,
                    "created_at": future,
                    "updated_at": future,
                }
            ],
        )
    chunk = 50_000
    for start in range(0, count, chunk):
        with db.begin() as conn:
            conn.execute(
                DEADLINES.insert(),
                [
                    {
                        "contract_id": 1,
                        "entity": "milestone",
                        "entity_id": start + i,
                        "event": "auto_approve",
                        "due_at": future + timedelta(seconds=start + i),
                        "state_version": 3,
                        "status": "pending",
                        "created_at": future,
                        "attempts": 0,
                    }
                    for i in range(min(chunk, count - start))
                ],
            )
    sweeper = Sweeper(EscrowEngine(db, Settings().policy(), SystemClock()), "bench")
    timings = []
    for _ in range(20):
        t = time.perf_counter()
        report = sweeper.sweep()
        sweeper.next_due()
        timings.append((time.perf_counter() - t) * 1000)
        assert report.claimed == 0
    print(
        f"    sweep finding nothing due among {count}: median "
        f"{statistics.median(timings):.1f} ms, max {max(timings):.1f} ms",
        flush=True,
    )
    (worker,) = start_workers(url, 1, interval=0.1)
    time.sleep(5)  # some fifty sweeps
    status = Path(f"/proc/{worker.pid}/status").read_text()
    peak = next(line for line in status.splitlines() if line.startswith("VmHWM"))
    stop([worker])
    print(f"    worker peak RSS after 5 s of sweeps: {peak.split(':')[1].strip()}", flush=True)
    db.dispose()


def trickle(url: str, count: int, spacing_ms: float) -> None:
    db = database(url)
    first = datetime.now(UTC) + timedelta(seconds=5)
    span = timedelta(milliseconds=spacing_ms)
    print(f"(c) {count} deadlines falling due every {spacing_ms:.0f} ms ...", flush=True)
    # Seed them all due at once, then spread the due times: a steady trickle.
    seed_due_auto_approvals(db, count, first)
    with db.begin() as conn:
        ids = conn.execute(sa.select(DEADLINES.c.id).order_by(DEADLINES.c.id)).scalars().all()
        conn.execute(
            DEADLINES.update()
            .where(DEADLINES.c.id == sa.bindparam("pk"))
            .values(due_at=sa.bindparam("due")),
            [{"pk": i, "due": first + n * span} for n, i in enumerate(ids)],
        )
    processes = start_workers(url, 1)  # the default 1 s interval: lag comes from waking
    while pending(db):
        time.sleep(0.5)
    stop(processes)
    with db.connect() as conn:
        rows = conn.execute(
            sa.select(HISTORY.c.at, HISTORY.c.due_at).where(HISTORY.c.event == "auto_approve")
        ).all()
    lags = sorted((at - due).total_seconds() for at, due in rows)
    p50 = lags[len(lags) // 2]
    p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
    print(
        f"    fire lag over {len(lags)}: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
        f"max {lags[-1] * 1000:.0f} ms",
        flush=True,
    )
    db.dispose()


def dbos_interpreter(python: str | None) -> str | None:
    """An interpreter with `dbos` installed: the one given, or this one if it has it."""
    if python is not None:
        return python
    try:
        import dbos  # noqa: F401
    except ImportError:
        print(
            "(d) dbos: not installed here; pass --dbos-python PATH to an interpreter "
            "with `pip install dbos`: skipped",
            flush=True,
        )
        return None
    return sys.executable


def dbos_drain(python: str, count: int, url: str, label: str) -> float:
    """(d) The same workload on DBOS, its system database at `url`."""
    with tempfile.TemporaryDirectory() as tmp:
        # Starting DBOS workflows takes ~30 ms each here: give them time to all be waiting.
        until_due = 5 + count / 20
        print(f"(d) dbos, {label}: {count} workflows waiting on recv, due together ...", flush=True)
        done = subprocess.run(
            [python, str(ROOT / "bench" / "dbos_drain.py"), str(count), str(until_due), url],
            capture_output=True,
            text=True,
            check=True,
            cwd=tmp,
        )
    lines = done.stdout.splitlines()
    print("    " + next(line for line in lines if line.startswith("dbos:")), flush=True)
    return float(next(line for line in lines if line.startswith("RATE")).split()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drain", type=int, default=100_000)
    parser.add_argument("--pending", type=int, default=1_000_000)
    parser.add_argument("--trickle", type=int, default=600)
    parser.add_argument("--spacing-ms", type=float, default=20.0)
    parser.add_argument("--skip", default="", help="comma list of: pg, idle, trickle, reminders")
    parser.add_argument(
        "--forecast", type=int, default=1_000_000, help="pending deadlines for (e); 0 skips"
    )
    parser.add_argument(
        "--dbos-python",
        default=os.environ.get("ESCROWFLOW_DBOS_PYTHON"),
        help="an interpreter with dbos installed, for (d)",
    )
    parser.add_argument("--dbos", type=int, default=500, help="workflows for (d)")
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    dbos_python = dbos_interpreter(args.dbos_python)
    with tempfile.TemporaryDirectory() as tmp:
        sqlite_rate, sqlite_cpu, sqlite_limit, sqlite_limit_cpu = against_limit(
            "sqlite", lambda name: f"sqlite:///{tmp}/{name}.db", args.drain, 1, "sqlite, 1 worker"
        )
        limits = [
            f"drain sqlite 1 worker deadlines/s: {sqlite_rate:.0f}, limit: {sqlite_limit:.0f}, "
            f"ratio: {sqlite_rate / sqlite_limit:.2f}, cpu/1000 engine: {sqlite_cpu:.3f} "
            f"limit: {sqlite_limit_cpu:.3f}"
        ]
        if "reminders" not in skip:  # NT2: the same drain with reminders off, side by side
            off, _ = drain(
                f"sqlite:///{tmp}/off.db", args.drain, 1, "sqlite, reminders off", reminders=False
            )
            print(f"    drain sqlite reminders on / off: {sqlite_rate / off:.2f}", flush=True)
        if "idle" not in skip:
            idle_sweep(f"sqlite:///{tmp}/idle.db", args.pending)
        if "trickle" not in skip:
            trickle(f"sqlite:///{tmp}/trickle.db", args.trickle, args.spacing_ms)
    if "pg" not in skip:
        from tests.pg import Cluster

        # Durable, as a user's server is: fsync, synchronous_commit, full_page_writes on.
        cluster = Cluster(durable=True)
        cluster.start()
        try:
            one, one_cpu, pg_limit, pg_limit_cpu = against_limit(
                "postgresql", cluster.create_database, args.drain, 1, "postgresql, 1 worker"
            )
            limits.append(
                f"drain postgresql 1 worker deadlines/s: {one:.0f}, limit: {pg_limit:.0f}, "
                f"ratio: {one / pg_limit:.2f}, cpu/1000 engine: {one_cpu:.3f} "
                f"limit: {pg_limit_cpu:.3f}"
            )
            bare = bare_drain(cluster.create_database("bare"), args.drain)
            four, four_cpu = drain(
                cluster.create_database("four"), args.drain, 4, "postgresql, 4 workers"
            )
            print(f"    postgresql 4 workers / 1 worker: {four / one:.2f}", flush=True)
            print(
                "    postgresql CPU per 1,000 deadlines, 4 workers / 1 worker: "
                f"{four_cpu / one_cpu:.2f}",
                flush=True,
            )
            pg_dbos = (
                dbos_drain(
                    dbos_python,
                    args.dbos,
                    cluster.create_database("dbos").replace("+psycopg", ""),
                    "postgresql",
                )
                if dbos_python
                else None
            )
        finally:
            cluster.stop()
        print(
            f"drain postgresql 1 worker deadlines/s: {one:.0f}, bare: {bare:.0f}, "
            f"ratio: {one / bare:.2f}"
        )
        if pg_dbos:
            print(
                f"drain postgresql 1 worker deadlines/s: {one:.0f}, dbos: {pg_dbos:.0f}, "
                f"ratio: {one / pg_dbos:.1f}"
            )
    if args.forecast:
        from bench.backends import on_backends
        from bench.forecast import measure as forecast_time

        for name, seconds in on_backends(
            ["sqlite"] + ([] if "pg" in skip else ["postgresql"]),
            lambda name, url: forecast_time(name, url, args.forecast),
        ).items():
            print(f"(e) forecast {name} {args.forecast} pending deadlines: {seconds:.3f} s")
    dbos_rate = None
    if dbos_python:
        with tempfile.TemporaryDirectory() as tmp:
            dbos_rate = dbos_drain(dbos_python, args.dbos, f"sqlite:///{tmp}/dbos.sqlite", "sqlite")
    ratio = f"{sqlite_rate / dbos_rate:.1f}" if dbos_rate else "n/a"
    dbos_text = f"{dbos_rate:.0f}" if dbos_rate else "n/a"
    print(f"drain sqlite deadlines/s: {sqlite_rate:.0f}, dbos: {dbos_text}, ratio: {ratio}")
    for line in limits:
        print(line)


if __name__ == "__main__":
    main()
