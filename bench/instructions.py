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
  subtracted).

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

ROOT = Path(__file__).resolve().parent.parent
SMALL = {"transitions": 20, "deadlines": 500, "seed": 500}


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
            lines = []
            for measure, count, unit in (
                ("transitions", args.milestones, "milestone (7 steps)"),
                ("deadlines", args.deadlines, "fired deadline"),
            ):
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
