"""Bounded waits at the edges: /readyz answers within a second and says not ready when
writes fail; an exhausted pool is a JSON 503, never a plain-text 500."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine as DBEngine

from escrowflow.settings import Settings
from storage.db import make_engine
from storage.migrate import upgrade
from tests.conftest import database_settings
from tests.live import live_server
from tests.served import until
from workflows.clock import ManualClock
from workflows.engine import EscrowEngine
from workflows.policy import Policy


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB file system of the test's own (tmpfs), so it can be filled."""
    where = tmp_path / "disk"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.fail(f"this test mounts a tmpfs (as root): {mounted.stderr.decode()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_readyz_is_not_ready_on_a_full_disk_and_ready_again_once_there_is_room(
    small_disk: Path,
) -> None:
    db = make_engine(database_settings(f"sqlite:///{small_disk}/escrowflow.db", "FULL"))
    upgrade(db)
    engine = EscrowEngine(db, Policy(reminders={}), ManualClock())
    with live_server(engine, Settings(api_token_cache_seconds=0)) as url:
        assert httpx.get(f"{url}/readyz").json()["status"] == "ready"
        filler = small_disk / "filler"
        # Fill what is left of the disk, unbuffered: nothing is left to flush at close
        # (a buffered file's close raised ENOSPC again).
        with open(filler, "wb", buffering=0) as out:
            try:
                while True:
                    out.write(b"\0" * 65536)
            except OSError:
                pass
        full = httpx.get(f"{url}/readyz", timeout=10)
        assert full.status_code == 503, full.text
        assert full.json()["status"] == "database_unavailable"
        assert "disk" not in full.text.lower()  # the driver's words stay in the log
        filler.unlink()
        assert httpx.get(f"{url}/readyz").json()["status"] == "ready"
    db.dispose()


@pytest.mark.postgresql_only
def test_readyz_answers_while_the_database_holds_its_lock(db: DBEngine) -> None:
    """A lock taken on the schema's revision row: readiness answers while it is still
    held (its probe gives up after a second), though statements here wait 60 s."""
    url = db.url.render_as_string(hide_password=False)
    patient = make_engine(database_settings(url), lock_timeout=60)
    upgrade_probe = EscrowEngine(patient, Policy(reminders={}), ManualClock())
    with patient.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS alembic_version (version_num text)")
    holder = db.connect()
    transaction = holder.begin()
    holder.exec_driver_sql("LOCK TABLE alembic_version IN ACCESS EXCLUSIVE MODE")
    try:
        with live_server(upgrade_probe, Settings(api_token_cache_seconds=0)) as base:
            answer = httpx.get(f"{base}/readyz", timeout=30)
            assert answer.status_code == 503
            assert answer.json()["status"] == "database_unavailable"
    finally:
        transaction.rollback()
        holder.close()
        # The probe it gave up on still runs in a thread of this process: its connection
        # comes back to the pool once the lock is gone. Disposed before that, the pool
        # would leave it open, for the garbage collector to find in a later test.
        until(lambda: patient.pool.checkedout() == 0, "the readiness probe to end")  # type: ignore[attr-defined]
        with patient.begin() as conn:
            conn.exec_driver_sql("DROP TABLE alembic_version")
        patient.dispose()


@pytest.mark.postgresql_only
def test_an_exhausted_pool_is_a_json_503_never_a_500(db: DBEngine) -> None:
    url = db.url.render_as_string(hide_password=False)
    tiny = make_engine(database_settings(url), pool_size=1, max_overflow=0, pool_timeout=0.5)
    engine = EscrowEngine(tiny, Policy(reminders={}), ManualClock())
    from escrowflow import tokens

    token = tokens.create(tiny, engine.clock.now(), "web", ["read"])["token"]
    with live_server(engine, Settings(api_token_cache_seconds=60)) as base:
        headers = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{base}/v1/contracts", headers=headers).status_code == 200
        with tiny.connect() as held:  # the pool's one connection, held
            held.execute(sa.text("SELECT 1"))
            answer = httpx.get(f"{base}/v1/contracts", headers=headers, timeout=30)
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"] == "application/json"
        assert answer.json()["code"] == "storage_busy"
        assert answer.headers["Retry-After"] == "1"
        assert httpx.get(f"{base}/v1/contracts", headers=headers).status_code == 200
    tiny.dispose()


def test_a_burst_of_eight_keeps_its_connections_open(db: DBEngine) -> None:
    """A process keeps `ESCROWFLOW_POOL_SIZE` connections (10): eight requests at once are
    served by connections that stay open for the next eight, not opened and closed each
    time (on PostgreSQL, a server process forked and authenticated for each)."""
    url = db.url.render_as_string(hide_password=False)
    settings = Settings(database_url=url)
    assert settings.pool_size == 10
    pooled = settings.engine().db
    connects: list[object] = []
    sa.event.listen(pooled, "connect", lambda *_: connects.append(1))
    try:
        for _ in range(2):  # the second burst opens nothing
            held = [pooled.connect() for _ in range(8)]
            for conn in held:
                conn.exec_driver_sql("SELECT 1")
                conn.close()
        assert len(connects) == 8
        assert pooled.pool.checkedin() == 8  # type: ignore[attr-defined]
    finally:
        pooled.dispose()

    small = Settings(database_url=url, pool_size=2).engine().db
    try:
        held = [small.connect() for _ in range(4)]
        for conn in held:
            conn.close()
        assert small.pool.checkedin() == 2  # type: ignore[attr-defined]  # two closed
    finally:
        small.dispose()
