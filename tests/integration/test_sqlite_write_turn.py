"""The processes writing to one SQLite file take turns on `<file>.write-lock`
(`storage/sqlite.py:FileTurn`): a writer waits for the process in its turn at most the
lock timeout and is then refused as busy, having written nothing; a killed process's turn
is let go; a process that lets the turn go cannot take it straight back while another
waits; a turn got for a writer that gave up is let go. Two engines on one file in one
process take turns as two processes do, which the tests use where they must watch both
sides."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from storage.db import make_engine, transaction
from storage.dialect import adapter_of
from storage.errors import StorageBusy, StorageError
from tests.conftest import database_settings
from tests.served import until

BOUND = 10.0  # no test waits this long unless the behaviour under test is broken
ROOT = Path(__file__).resolve().parents[2]

# A process that takes the write turn of the file in argv[1], says so, and holds it (no
# SQLite transaction: only the turn) until its standard input closes.
HOLDER = """
import sys
sys.path.insert(0, sys.argv[2])
from storage.db import make_engine
from storage.dialect import adapter_of
from tests.conftest import database_settings
engine = make_engine(database_settings("sqlite:///" + sys.argv[1]))
with adapter_of(engine).write_turn(engine):
    print("holding", flush=True)
    sys.stdin.read()
"""


def _engine(path: Path, lock_timeout: float = BOUND) -> Engine:
    engine = make_engine(database_settings(f"sqlite:///{path}"), lock_timeout=lock_timeout)
    with transaction(engine) as conn:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS written (who TEXT)")
    return engine


def _write(engine: Engine, who: str) -> None:
    with transaction(engine) as conn:
        conn.execute(sa.text("INSERT INTO written (who) VALUES (:who)"), {"who": who})


def _written(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [row[0] for row in conn.exec_driver_sql("SELECT who FROM written ORDER BY rowid")]


@contextmanager
def _holder(path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the file's write turn until the block ends."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), str(ROOT)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stdout.readline() == "holding\n"
        yield process
    finally:
        assert process.stdin is not None and process.stdout is not None
        process.stdin.close()  # its end, if it still runs
        process.wait(BOUND)
        process.stdout.close()


def _waiting_in_the_kernel(path: Path) -> bool:
    """Whether an open file waits, blocked in the kernel, for the turn (`/proc/locks`
    lists a waiter as `N: -> FLOCK ... <major>:<minor>:<inode> ...`)."""
    inode = os.stat(f"{path}.write-lock").st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if len(fields) > 6 and fields[1] == "->" and fields[6].endswith(f":{inode}"):
            return True
    return False


def test_a_write_waits_for_the_process_in_its_turn_then_is_refused_as_busy(
    tmp_path: Path,
) -> None:
    path = tmp_path / "escrowflow.db"
    impatient, patient = _engine(path, lock_timeout=0.3), _engine(path)
    with _holder(path):  # it holds no SQLite lock at all: only the turn
        with pytest.raises(StorageBusy) as refused:
            _write(impatient, "while held")
        assert refused.value.code == "database_busy"
    _write(patient, "after")  # the holder let it go as it ended
    assert _written(patient) == ["after"]
    impatient.dispose()
    patient.dispose()


def test_the_turn_of_a_killed_process_is_let_go(tmp_path: Path) -> None:
    path = tmp_path / "escrowflow.db"
    engine = _engine(path)
    with _holder(path) as holder:
        holder.kill()  # SIGKILL: no code of its own runs to let the turn go
        holder.wait(BOUND)
        _write(engine, "after the kill")
    assert _written(engine) == ["after the kill"]
    engine.dispose()


def test_a_process_that_lets_the_turn_go_cannot_take_it_back_while_another_waits(
    tmp_path: Path,
) -> None:
    path = tmp_path / "escrowflow.db"
    first, second = _engine(path), _engine(path)
    order: list[str] = []
    first_turn, second_turn = (adapter_of(e).write_turn(e) for e in (first, second))

    def waiting_second() -> None:
        with second_turn:
            order.append("second")

    with first_turn:
        other = threading.Thread(target=waiting_second)
        other.start()
        until(lambda: _waiting_in_the_kernel(path), "the second to wait for the turn")
    with first_turn:  # straight back, as a busy process would
        order.append("first again")
    other.join(BOUND)
    assert order == ["second", "first again"]
    first.dispose()
    second.dispose()


def test_a_turn_got_for_a_writer_that_gave_up_is_let_go(tmp_path: Path) -> None:
    path = tmp_path / "escrowflow.db"
    holding, impatient = _engine(path), _engine(path, lock_timeout=0.2)
    release = threading.Event()
    held = threading.Event()

    def hold() -> None:
        with adapter_of(holding).write_turn(holding):
            held.set()
            release.wait(BOUND)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(BOUND)
    with pytest.raises(StorageBusy):
        _write(impatient, "gave up")
    release.set()
    holder.join(BOUND)
    # The keeper that waited for the impatient writer gets the turn now, for no one:
    # it lets it go, so a third open file of the same process gets it, as does the
    # impatient engine itself next time.
    third = _engine(path)
    _write(third, "third")
    _write(impatient, "impatient, later")
    assert _written(third) == ["third", "impatient, later"]
    for engine in (holding, impatient, third):
        engine.dispose()


def test_a_turn_file_that_cannot_be_opened_is_named_with_what_to_fix(tmp_path: Path) -> None:
    path = tmp_path / "escrowflow.db"
    engine = make_engine(database_settings(f"sqlite:///{path}"), lock_timeout=0.5)
    Path(f"{path}.write-lock").mkdir()  # not a file: no one, root included, opens it so
    with pytest.raises(StorageError) as refused:
        _write(engine, "never")
    assert refused.value.code == "database_unavailable"
    assert f"{path}.write-lock" in refused.value.message
    assert "directory must be writable" in refused.value.message
    again: list[str] = []

    def other_thread() -> None:  # it finds the threads' turn free: the first let it go
        try:
            _write(engine, "never")
        except StorageError as error:
            again.append(error.code)

    other = threading.Thread(target=other_thread)
    other.start()
    other.join(BOUND)
    assert again == ["database_unavailable"]
    engine.dispose()
