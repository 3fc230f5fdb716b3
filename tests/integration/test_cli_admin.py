"""`escrowflow tokens` and `escrowflow webhooks`, as an operator runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine as DBEngine
from typer.testing import CliRunner

from escrowflow import tokens
from escrowflow.cli import app
from escrowflow.cli.common import close_engines


@dataclass(frozen=True)
class Ran:
    """What a shell sees of one `escrowflow` command."""

    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: str, env: dict[str, str]) -> Ran:
    """`escrowflow ARGS` in this process (Typer's runner: the same app, exit code and
    streams as a shell gets, without 1.5 s of start-up); `env`: the settings."""
    done = CliRunner().invoke(app, list(args), env=env)
    close_engines()
    if done.exception is not None and not isinstance(done.exception, SystemExit):
        raise done.exception
    return Ran(done.exit_code, done.stdout, done.stderr)


def cli(db: DBEngine, *args: str, env: dict[str, str] | None = None) -> Ran:
    """`escrowflow ARGS` on the test's database (`env`: more settings)."""
    url = db.url.render_as_string(hide_password=False)
    return run_cli(*args, env={"ESCROWFLOW_DATABASE_URL": url, **(env or {})})


def as_json(done: Ran) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_tokens_are_created_once_listed_without_the_secret_and_revoked(db: DBEngine) -> None:
    created = as_json(cli(db, "tokens", "create", "web", "--scope", "act:client", "--json"))
    assert created["token"].startswith("efk_") and created["scopes"] == ["act:client"]
    assert tokens.authenticate(db, f"Bearer {created['token']}").service == "web"
    listed = cli(db, "tokens", "list")
    assert "web" in listed.stdout and created["token"] not in listed.stdout
    assert cli(db, "tokens", "revoke", str(created["id"])).returncode == 0
    again = cli(db, "tokens", "revoke", str(created["id"]))
    assert again.returncode == 3 and again.stderr.count("\n") == 1
    bad = cli(db, "tokens", "create", "web", "--scope", "act:system")
    assert bad.returncode == 2 and "act:client" in bad.stderr and bad.stderr.count("\n") == 1


def test_webhooks_are_added_listed_removed_and_replayed(db: DBEngine) -> None:
    added = as_json(
        cli(
            db, "webhooks", "add", "https://hooks.example.com/hook", "--event", "refund.*", "--json"
        )
    )
    assert added["secret"].startswith("whsec_")
    assert "refund.*" in cli(db, "webhooks", "list").stdout
    bad = cli(db, "webhooks", "add", "https://hooks.example.com/", "--event", "refunds")
    assert bad.returncode == 2 and "ENTITY.EVENT" in bad.stderr
    assert cli(db, "webhooks", "remove", str(added["id"])).returncode == 0
    assert cli(db, "webhooks", "list").stdout.startswith("no subscriptions")
    assert cli(db, "webhooks", "replay").stdout.strip() == "0 deliveries queued again"
    missing = cli(db, "webhooks", "replay", "--delivery", "42")
    assert missing.returncode == 3 and "not dead-lettered" in missing.stderr


@pytest.mark.parametrize(
    "command",
    [["status"], ["show", "contract", "1"], ["deadlines", "list"], ["tokens", "list"]],
)
def test_storage_errors_are_one_line_with_exit_7(tmp_path: Path, command: list[str]) -> None:
    done = run_cli(*command, env={"ESCROWFLOW_DATABASE_URL": f"sqlite:///{tmp_path}/no/dir/x.db"})
    assert done.returncode == 7, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


@pytest.mark.slow  # CLI processes: what a shell gets, start-up and exit included
def test_migrate_into_a_missing_directory_says_so_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "ESCROWFLOW_DATABASE_URL": f"sqlite:///{tmp_path}/no/such/dir/x.db"}
    done = subprocess.run(
        [sys.executable, "-m", "escrowflow", "migrate"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 7  # storage errors
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "directory exists" in done.stderr
    env["ESCROWFLOW_DATABASE_URL"] = f"sqlite:///{tmp_path}/x.db"
    first = subprocess.run(
        [sys.executable, "-m", "escrowflow", "migrate"], env=env, capture_output=True, text=True
    )
    assert first.returncode == 0 and "created the schema at revision" in first.stdout
    again = subprocess.run(
        [sys.executable, "-m", "escrowflow", "migrate"], env=env, capture_output=True, text=True
    )
    assert again.returncode == 0 and "already at revision" in again.stdout
