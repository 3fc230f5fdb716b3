"""A throwaway PostgreSQL cluster for the test suite and the benchmarks.

initdb + postgres on a unix socket in a temporary directory, owned by an unprivileged
user when we run as root (postgres refuses to run as root). Torn down at the end.

The tests' clusters run with fast settings (no fsync: nothing here outlives the machine);
`durable=True` runs one as a user would (fsync, synchronous commit, full page writes),
for the benchmarks and the failover test. `standby()` makes a streaming standby of a
running cluster (pg_basebackup), `promote()` makes it a primary, `kill()` is the server
lost: SIGKILL to the postmaster and every backend at once.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    pass


def find_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return candidates[0] if candidates else None


FAST = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
REPLICATION = {"wal_level": "replica", "max_wal_senders": "5", "wal_keep_size": "256MB"}


class Cluster:
    def __init__(self, *, durable: bool = False, settings: dict[str, str] | None = None) -> None:
        self.settings = {
            **(DURABLE if durable else FAST),
            "max_connections": "200",
            "shared_buffers": "128MB",
            **(settings or {}),
        }
        initdb, postgres = find_bin("initdb"), find_bin("postgres")
        if not initdb or not postgres:
            raise PostgresUnavailable(
                "PostgreSQL server binaries (initdb, postgres) not found: "
                "apt-get install postgresql"
            )
        self.bin_dir = str(Path(postgres).resolve().parent)
        self.root = Path(tempfile.mkdtemp(prefix="escrowflow-pg-"))
        self.data = self.root / "data"
        self.socket = self.root / "sock"
        self.socket.mkdir()
        self.user: str | None = None
        if os.geteuid() == 0:
            for candidate in ("postgres", "nobody"):
                try:
                    pwd.getpwnam(candidate)
                except KeyError:
                    continue
                self.user = candidate
                break
            if self.user is None:
                raise PostgresUnavailable("running as root and no postgres/nobody user to drop to")
            entry = pwd.getpwnam(self.user)
            os.chmod(self.root, 0o755)
            for path in (self.root, self.socket):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self.process: subprocess.Popen[bytes] | None = None

    def _run_as(self, argv: list[str]) -> list[str]:
        if self.user is None:
            return argv
        runuser = shutil.which("runuser")
        if runuser:
            return [runuser, "-u", self.user, "--", *argv]
        return ["su", self.user, "-s", "/bin/sh", "-c", " ".join(argv)]

    def start(self) -> None:
        if not self.data.exists():
            subprocess.run(
                self._run_as(
                    [f"{self.bin_dir}/initdb", "-D", str(self.data), "-U", "postgres", "-A",
                     "trust", "-E", "UTF8", "--no-sync"]
                ),
                check=True,
                capture_output=True,
            )  # fmt: skip
        self._log = open(self.root / "postgres.log", "ab")  # noqa: SIM115 - closed in stop()
        settings = [
            arg for name, value in self.settings.items() for arg in ("-c", f"{name}={value}")
        ]
        self.process = subprocess.Popen(
            self._run_as(
                [f"{self.bin_dir}/postgres", "-D", str(self.data), "-k", str(self.socket),
                 "-c", "listen_addresses=", *settings]
            ),
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )  # fmt: skip
        # Ready when it accepts a connection (the socket appears before it does).
        deadline = time.monotonic() + 30
        while not self._accepts_connections():
            if self.process.poll() is not None:
                log = (self.root / "postgres.log").read_text(errors="replace")
                raise PostgresUnavailable(f"postgres exited: {log[-2000:]}")
            if time.monotonic() > deadline:
                raise PostgresUnavailable("postgres did not start within 30 s")
            time.sleep(0.05)

    def standby(self, settings: dict[str, str] | None = None) -> Cluster:
        """A streaming standby of this (running) cluster, started; `application_name`
        "standby" is what `synchronous_standby_names` names."""
        other = Cluster(durable=self.settings["fsync"] == "on", settings=settings)
        conninfo = f"host={self.socket} user=postgres application_name=standby"
        subprocess.run(
            other._run_as(
                [f"{self.bin_dir}/pg_basebackup", "-D", str(other.data), "-d", conninfo,
                 "-R", "-X", "stream", "--checkpoint=fast", "--no-sync"]
            ),
            check=True,
            capture_output=True,
        )  # fmt: skip
        other.start()
        return other

    def promote(self) -> None:
        """Make this standby the primary: it takes writes when this returns."""
        subprocess.run(
            self._run_as([f"{self.bin_dir}/pg_ctl", "promote", "-w", "-D", str(self.data)]),
            check=True,
            capture_output=True,
        )

    def disconnect(self) -> None:
        """This standby stops receiving from its primary (a network partition): its WAL
        receiver is told the primary is nowhere, and is gone when this returns."""
        with open(self.data / "postgresql.auto.conf", "a") as conf:
            conf.write("primary_conninfo = ''\n")
        subprocess.run(
            self._run_as([f"{self.bin_dir}/pg_ctl", "reload", "-D", str(self.data)]),
            check=True,
            capture_output=True,
        )
        deadline = time.monotonic() + 30
        while self.processes("postgres: walreceiver"):
            if time.monotonic() > deadline:
                raise PostgresUnavailable("the WAL receiver did not stop within 30 s")
            time.sleep(0.05)

    def kill(self) -> None:
        """The server lost at once: SIGKILL to the postmaster and all its processes (a
        backend left running would keep answering on its open connection)."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        family = [postmaster, *_children(postmaster)]
        for pid in family:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=20)

    def processes(self, title: str) -> list[int]:
        """The pids of this cluster's processes whose title starts with `title` (e.g.
        "postgres: walreceiver")."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        found = []
        for pid in _children(postmaster):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if cmdline.decode(errors="replace").startswith(title):
                found.append(pid)
        return found

    def _accepts_connections(self) -> bool:
        import psycopg

        if not (self.socket / ".s.PGSQL.5432").exists():
            return False
        try:
            psycopg.connect(host=str(self.socket), user="postgres", dbname="postgres").close()
        except psycopg.OperationalError:
            return False
        return True

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@/{database}?host={self.socket}"

    def create_database(self, name: str) -> str:
        import sqlalchemy as sa

        engine = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        engine.dispose()
        return self.url(name)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if getattr(self, "_log", None) is not None:
            self._log.close()
        shutil.rmtree(self.root, ignore_errors=True)


def _children(parent: int) -> list[int]:
    """The pids whose parent is `parent` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after its ')'.
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            found.append(int(entry.name))
    return found
