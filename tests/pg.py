"""A throwaway PostgreSQL cluster for the test suite and the benchmarks.

initdb + postgres on a unix socket in a temporary directory, owned by an unprivileged
user when we run as root (postgres refuses to run as root). Torn down at the end.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
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


class Cluster:
    def __init__(self) -> None:
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
        self._log = open(self.root / "postgres.log", "wb")  # noqa: SIM115 - closed in stop()
        subprocess.run(
            self._run_as(
                [
                    f"{self.bin_dir}/initdb",
                    "-D",
                    str(self.data),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ]
            ),
            check=True,
            capture_output=True,
        )
        self.process = subprocess.Popen(
            self._run_as(
                [
                    f"{self.bin_dir}/postgres",
                    "-D",
                    str(self.data),
                    "-k",
                    str(self.socket),
                    "-c",
                    "listen_addresses=",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=200",
                    "-c",
                    "shared_buffers=128MB",
                ]
            ),
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        # Ready when it accepts a connection (the socket appears before it does).
        deadline = time.monotonic() + 30
        while not self._accepts_connections():
            if self.process.poll() is not None:
                log = (self.root / "postgres.log").read_text(errors="replace")
                raise PostgresUnavailable(f"postgres exited: {log[-2000:]}")
            if time.monotonic() > deadline:
                raise PostgresUnavailable("postgres did not start within 30 s")
            time.sleep(0.05)

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
