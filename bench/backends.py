"""Run one measurement on each backend asked for: a durable PostgreSQL server started for
the run and stopped after it (tests/pg.py) and a SQLite file in a temporary directory."""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable


def on_backends(backends: list[str], measure: Callable[[str, str], float]) -> dict[str, float]:
    """`measure(name, url)` on each backend in `backends`; its results by name."""
    results: dict[str, float] = {}
    if "postgresql" in backends:
        from tests.pg import Cluster

        cluster = Cluster(durable=True)  # as a user's server: fsync and synchronous commit
        cluster.start()
        try:
            results["postgresql"] = measure("postgresql", cluster.create_database("bench"))
        finally:
            cluster.stop()
    if "sqlite" in backends:
        with tempfile.TemporaryDirectory() as tmp:
            results["sqlite"] = measure("sqlite", f"sqlite:///{tmp}/bench.db")
    return results


def run_main(
    doc: str,
    option: str,
    default: int,
    measure: Callable[[str, str, int], float],
    backends: str = "postgresql,sqlite",
) -> tuple[int, dict[str, float]]:
    """A benchmark's command line, `--<option> N --backends ...`: N and the results of
    `measure(name, url, N)` by backend."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument(f"--{option}", type=int, default=default)
    parser.add_argument("--backends", default=backends)
    args = parser.parse_args()
    count = getattr(args, option)
    return count, on_backends(args.backends.split(","), lambda n, url: measure(n, url, count))


def timing_main(
    doc: str,
    option: str,
    default: int,
    measure: Callable[[str, str, int], float],
    line: Callable[[str, int, float], str],
) -> None:
    """A timing benchmark's command line; prints `line(backend, N, result)` last, one
    line a backend."""
    count, results = run_main(doc, option, default, measure)
    for name, value in results.items():
        print(line(name, count, value))


def ratio_main(
    doc: str, option: str, default: int, measure: Callable[[str, str, int], float], label: str
) -> None:
    """A ratio benchmark's command line; prints `<label> <backend>: R` last, one line a
    backend."""
    _count, ratios = run_main(doc, option, default, measure)
    for name, ratio in ratios.items():
        print(f"{label} {name}: {ratio:.2f}")


def compare(ours: tuple[str, float], baseline: tuple[str, float]) -> float:
    """Print two rates (per second) side by side; ours / baseline."""
    for name, rate in (ours, baseline):
        print(f"  {name:8} {rate:8.0f} transitions/s  ({1e6 / rate:6.0f} us each)")
    return ours[1] / baseline[1]
