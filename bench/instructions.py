"""Benchmark: CPU instructions per transition and per fired deadline, this tree against
another revision, side by side. Not a test: it prints figures.

Wall-clock rates on a shared 2-core machine vary by a third between identical runs (the
bare claim-and-update loop of bench/deadlines.py has measured 2,617/s and 4,684/s within
the hour). Instructions, counted by valgrind's callgrind, do not: the same binary and
inputs give the same count whatever else the machine does. Each tree runs twice per
measure, with a small and a large N, on a SQLite file (in process, no server); the
difference over the extra work is the cost of one operation, start-up and imports
subtracted:

- transitions: `bench/transitions.py`'s mix through the engine (per milestone: create,
  accept, fund, submit, request changes, submit, release);
- deadlines: one sweep firing N overdue auto-approvals (the seeding measured apart and
  subtracted);
- requests: `bench/http.py`'s mix through the HTTP app (offer, accept, five events, one
  read, each a request with its headers and token), called as ASGI by this process, no
  socket: with transitions it prices what the app adds to the engine's work. The server
  (uvicorn) and the kernel's sockets are not in it.

    python bench/instructions.py [--against aef95ca] [--milestones 100] [--deadlines 2500]

Its last lines: `instructions per <measure>: ours N, <rev>: M, ours/theirs: R` (below
1.00: this tree does the same work in fewer instructions).
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/http.py would shadow the standard library's `http` for every script in here.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import importlib
import os
import re
import shutil
import subprocess
import tempfile
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SMALL = {"transitions": 20, "deadlines": 500, "seed": 500, "requests": 20}


def asgi_mix(url: str, count: int) -> None:
    """`count` contracts' requests of bench/http.py, one after another, straight into the
    app (a minimal ASGI caller: no server, no socket)."""
    import asyncio
    import json
    import uuid

    from bench import http as mix
    from escrowflow import tokens
    from escrowflow.api import create_app
    from escrowflow.settings import Settings
    from storage.db import make_engine
    from storage.migrate import upgrade
    from workflows.clock import SystemClock

    # The engine's writes in this process, as they were before the writing process: the
    # count is the app's and the engine's together, whatever the revision.
    settings = Settings(database_url=url, sqlite_synchronous="OFF", api_write_process=False)
    db = make_engine(settings, create=True)
    upgrade(db)
    bearer = tokens.create(db, SystemClock().now(), "bench", ["act:client", "act:freelancer"])
    db.dispose()
    app = create_app(settings)
    auth = f"Bearer {bearer['token']}".encode()

    async def call(method: str, path: str, actor: str, body: object = None) -> Any:
        raw = b"" if body is None else json.dumps(body).encode()
        headers = [
            (b"host", b"bench"),
            (b"authorization", auth),
            (b"content-length", b"%d" % len(raw)),
        ]
        if method == "POST":
            headers += [
                (b"escrowflow-actor", actor.encode()),
                (b"idempotency-key", uuid.uuid4().hex.encode()),
                (b"content-type", b"application/json"),
            ]
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
            "query_string": b"", "root_path": "", "headers": headers,
            "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "app": app,
        }  # fmt: skip
        messages = [{"type": "http.request", "body": raw, "more_body": False}]
        sent: list[Any] = []

        async def receive() -> Any:
            return messages.pop() if messages else {"type": "http.disconnect"}

        async def send(message: Any) -> None:
            sent.append(message)

        await app(scope, receive, send)
        if sent[0]["status"] >= 300:
            raise SystemExit(f"{path}: {sent[0]['status']} {sent[1:]}")
        return json.loads(b"".join(m.get("body", b"") for m in sent[1:]))

    async def contracts() -> None:
        async with app.router.lifespan_context(app):
            for _ in range(count):
                offer = await call("POST", "/v1/contracts", mix.CLIENT, mix.OFFER)
                await call("POST", f"/v1/contracts/{offer['id']}/events/accept", mix.FREELANCER)
                milestone = offer["created"][1]["id"]
                for event, actor in mix.MIX:
                    await call("POST", f"/v1/milestones/{milestone}/events/{event}", actor)
                await call("GET", f"/v1/milestones/{milestone}", "")

    asyncio.run(contracts())


def child(tree: str, measure: str, count: int) -> None:
    """Inside valgrind: do `count` of `measure` with the code of `tree`."""
    sys.path.insert(0, tree)
    from datetime import UTC, datetime

    from escrowflow.settings import Settings
    from storage.db import make_engine
    from storage.migrate import upgrade
    from workflows.clock import ManualClock

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        if measure == "requests":
            asgi_mix(url, count)
            return
        if measure == "transitions":
            from bench import transitions

            db = make_engine(Settings(database_url=url, sqlite_synchronous="OFF"))
            upgrade(db)
            transitions.engine_rate(db, count)
            return
        from bench import deadlines

        db = deadlines.database(url)
        deadlines.seed(db, count)
        if measure == "seed":
            return
        engines = importlib.import_module("workflows.engine")
        try:  # the names of this tree, or of one from before issue 21
            sweeper = importlib.import_module("workflows.sweeper")
        except ImportError:
            sweeper = importlib.import_module("workflows.deadlines")
        make = getattr(engines, "EscrowEngine", None) or engines.Engine
        engine = make(db, Settings().policy(), ManualClock(datetime.now(UTC)))
        report = sweeper.fire_due(engine)
        assert report.fired == count, report


def instructions(tree: Path, measure: str, count: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={tmp}/out",
                sys.executable,
                __file__,
                "--child",
                str(tree),
                measure,
                str(count),
            ],
            capture_output=True,
            text=True,
            cwd=tmp,
            env={**os.environ, "PYTHONHASHSEED": "0"},  # the same dict orders each run
        )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"callgrind failed on {tree} {measure} {count}: {done.stderr[-2000:]}")
    return int(found.group(1))


def per_operation(tree: Path, measure: str, count: int) -> float:
    """Instructions for one more operation (the large run less the small, per item)."""
    extra = instructions(tree, measure, count) - instructions(tree, measure, SMALL[measure])
    if measure == "deadlines":  # the seeding is measured apart and taken off
        extra -= instructions(tree, "seed", count) - instructions(tree, "seed", SMALL["seed"])
    return extra / (count - SMALL[measure])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default="aef95ca", help="the revision to compare with")
    parser.add_argument("--milestones", type=int, default=100)
    parser.add_argument("--deadlines", type=int, default=2500)
    parser.add_argument("--requests", type=int, default=100, help="contracts over the app")
    parser.add_argument(
        "--measures", default="transitions,deadlines,requests", help="which, comma-separated"
    )
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind not found: apt-get install valgrind")
    with tempfile.TemporaryDirectory() as tmp:
        theirs = Path(tmp) / "theirs"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(theirs), args.against],
            check=True,
            capture_output=True,
        )
        try:
            # Both trees' bytecode written first: a run that compiles would count the
            # compiler (the first run in a fresh worktree), one that finds it would not.
            for tree in (ROOT, theirs):
                subprocess.run(
                    [sys.executable, "-m", "compileall", "-q", "-x", r"/\.venv/", str(tree)],
                    check=True,
                    env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
                )
            lines = []
            for measure, count, unit in (
                ("transitions", args.milestones, "milestone (7 steps)"),
                ("deadlines", args.deadlines, "fired deadline"),
                ("requests", args.requests, "contract over the app (8 requests)"),
            ):
                if measure not in args.measures.split(","):
                    continue
                print(f"{measure}: callgrind on both trees ...", flush=True)
                ours = per_operation(ROOT, measure, count)
                base = per_operation(theirs, measure, count)
                lines.append(
                    f"instructions per {unit}: ours {ours:,.0f}, {args.against}: {base:,.0f}, "
                    f"ours/theirs: {ours / base:.3f}"
                )
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(theirs)],
                check=False,
                capture_output=True,
            )
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
