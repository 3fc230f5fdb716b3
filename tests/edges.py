"""Every declared edge and how often it is taken: `python -m tests.edges`.

Lists each edge the machine classes declare (machine, source, event, target: party
events, engine cascades and timers) with how often the differential run takes it, run
here on a SQLite file (`--lifecycles N`, default 300), plus what the last pytest run's
engine tests took (`.edge-counts.json`, written by tests/conftest.py), and ends with
`edges covered: N/M`. Exits 1 if an edge is never taken.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

from storage.db import make_engine
from storage.models import metadata
from tests.model.differential import declared_edges, run_lifecycles

SUITE_COUNTS = Path(__file__).resolve().parent.parent / ".edge-counts.json"


def suite_counts() -> Counter[tuple[str, str, str, str]]:
    """The edges the last pytest run's engine tests took, if it wrote them."""
    if not SUITE_COUNTS.exists():
        return Counter()
    rows = json.loads(SUITE_COUNTS.read_text())
    return Counter({tuple(row[:4]): row[4] for row in rows})


def save_suite_counts(counts: Counter[tuple[str, str, str, str]], part: str | None = None) -> None:
    """Write the run's counts; `part`: one pytest-xdist worker's share, merged by
    `merge_suite_counts` at the end of the run."""
    path = SUITE_COUNTS if part is None else SUITE_COUNTS.with_suffix(f".{part}.json")
    path.write_text(json.dumps([[*edge, n] for edge, n in sorted(counts.items())]))


def merge_suite_counts(counts: Counter[tuple[str, str, str, str]]) -> None:
    """This process's counts and every worker's share, as the run's counts."""
    total = Counter(counts)
    for part in SUITE_COUNTS.parent.glob(f"{SUITE_COUNTS.stem}.*.json"):
        rows = json.loads(part.read_text())
        total.update({tuple(row[:4]): row[4] for row in rows})
        part.unlink()
    if total:
        save_suite_counts(total)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lifecycles", type=int, default=300)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{directory}/edges.db"
        db = make_engine(SimpleNamespace(database_url=url, sqlite_synchronous="OFF"))
        metadata.create_all(db)
        differential = run_lifecycles(db, args.lifecycles)
        db.dispose()
    suite = suite_counts()
    edges = declared_edges()
    print(f"{'differential':>12} {'suite':>7}  machine.source --event--> target")
    for entity, source, event, target in edges:
        key = (entity, source, event, target)
        print(f"{differential[key]:>12} {suite[key]:>7}  {entity}.{source} --{event}--> {target}")
    covered = sum(1 for edge in edges if differential[edge] or suite[edge])
    if not suite:
        print(f"(no {SUITE_COUNTS.name}: run pytest first to count the rest of the suite)")
    print(f"{args.lifecycles} lifecycles")
    print(f"edges covered: {covered}/{len(edges)}")
    return 0 if covered == len(edges) else 1


if __name__ == "__main__":
    sys.exit(main())
