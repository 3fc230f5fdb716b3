"""Fixtures: every engine test runs on a real SQLite file and a real PostgreSQL server.

`ESCROWFLOW_TEST_BACKENDS=sqlite` restricts the run to SQLite. Without PostgreSQL
server binaries the PostgreSQL half skips with the reason, except under CI (CI=true),
where that is a failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import types
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine as DBEngine

from storage.db import make_engine
from storage.models import metadata
from tests.edges import merge_suite_counts, save_suite_counts
from tests.helpers import Scenario
from tests.live import Api, live_server
from tests.model.differential import edges_taken
from tests.pg import Cluster, PostgresUnavailable
from workflows.clock import ManualClock
from workflows.decision import Decider
from workflows.engine import EscrowEngine
from workflows.policy import Policy

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
BACKENDS = [
    b.strip()
    for b in os.environ.get("ESCROWFLOW_TEST_BACKENDS", "sqlite,postgresql").split(",")
    if b.strip()
]


# Every decision the engine reads from its transition table is also asked of
# python-statemachine, in every test that runs the engine in this process.
Decider.cross_check = True


def database_settings(url: str, synchronous: str = "NORMAL") -> types.SimpleNamespace:
    return types.SimpleNamespace(database_url=url, sqlite_synchronous=synchronous)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    try:
        cluster = Cluster()
        cluster.start()
    except PostgresUnavailable as exc:
        if IN_CI:
            pytest.fail(f"PostgreSQL is required under CI: {exc}")
        pytest.skip(f"PostgreSQL not available here: {exc}")
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def pg_schema_url(pg_cluster: Cluster) -> Iterator[str]:
    url = pg_cluster.create_database("escrowflow_test")
    engine = make_engine(database_settings(url))
    metadata.create_all(engine)
    engine.dispose()
    yield url


def _truncate_all(engine: DBEngine) -> None:
    names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# The edges (machine, source, event, target) the engine tests take, from the history
# they write: `python -m tests.edges` adds them to the differential run's counts.
SUITE_EDGES: Counter[tuple[str, str, str, str]] = Counter()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file with the schema, made once: each test gets a copy (a file copy, not
    the CREATE statements again)."""
    path = tmp_path_factory.mktemp("template") / "escrowflow.db"
    engine = make_engine(database_settings(f"sqlite:///{path}"))
    metadata.create_all(engine)
    with engine.connect() as conn:  # everything in the main file, none in the WAL
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


@pytest.fixture
def db(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[DBEngine]:
    if backend == "sqlite":
        path = tmp_path / "escrowflow.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        engine = make_engine(database_settings(f"sqlite:///{path}"))
    else:
        url = request.getfixturevalue("pg_schema_url")
        # A short lock bound: the tests of held rows wait it out (2 s) several times.
        engine = make_engine(
            database_settings(url), lock_timeout=2.0, pool_size=10, max_overflow=20
        )
        _truncate_all(engine)
    yield engine
    with contextlib.suppress(sa.exc.SQLAlchemyError):  # a test may leave it unusable
        SUITE_EDGES.update(edges_taken(engine))
    engine.dispose()


def pytest_sessionfinish(session: pytest.Session) -> None:
    worker = getattr(session.config, "workerinput", {}).get("workerid")
    if worker is not None:  # a pytest-xdist worker: its share, merged by the controller
        if SUITE_EDGES:
            save_suite_counts(SUITE_EDGES, part=worker)
        return
    merge_suite_counts(SUITE_EDGES)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def policy() -> Policy:
    return Policy(reminders={})


@pytest.fixture
def engine(db: DBEngine, policy: Policy, clock: ManualClock) -> EscrowEngine:
    """The engine of a deployment that has started: its terms are stored (TM1), so a
    test's "changes nothing" snapshot is not changed by the first use storing them."""
    engine = EscrowEngine(db, policy, clock)
    engine.terms.current()
    return engine


@pytest.fixture
def sc(engine: EscrowEngine, clock: ManualClock) -> Scenario:
    return Scenario(engine, clock)


def table_counts(db: DBEngine) -> dict[str, int]:
    with db.connect() as conn:
        return {
            t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
            for t in metadata.sorted_tables
        }


@pytest.fixture
def api(engine: EscrowEngine) -> Iterator[Api]:
    """The HTTP API around the test's engine, on a real server on 127.0.0.1."""
    with live_server(engine) as url:
        client = Api(url, engine)
        yield client
        client.close()


@pytest.hookimpl(trylast=True)  # after pytest's own reordering by fixture parameter
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`postgresql_only` tests are not collected for SQLite (not skipped: not run at all)."""
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_sqlite = callspec is not None and callspec.params.get("backend") == "sqlite"
        (drop if on_sqlite and item.get_closest_marker("postgresql_only") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    _heavy_first_on_each_worker(config, items)


def _heavy_first_on_each_worker(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under `pytest -n N --dist worksteal` (CI's slow set), each worker starts on one of
    the `heavy` tests (several minutes each) instead of two landing on one worker, which
    would make that worker alone the run's length. Worksteal hands worker i the i-th of
    N contiguous shares (`len // workers left` each), so a heavy test is put at the head
    of each share; the others keep their order."""
    workers = int(getattr(config, "workerinput", {}).get("workercount", 1))
    heavy = [item for item in items if item.get_closest_marker("heavy")]
    if workers < 2 or not heavy:
        return
    rest = [item for item in items if not item.get_closest_marker("heavy")]
    ordered: list[pytest.Item] = []
    left = len(items)
    for share in range(workers):
        size = left // (workers - share)
        left -= size
        # The heavy tests beyond one a worker go to the last shares' heads too.
        mine = heavy[share::workers]
        ordered.extend(mine)
        take = max(0, size - len(mine))
        ordered.extend(rest[:take])
        rest = rest[take:]
    ordered.extend(rest)
    items[:] = ordered
