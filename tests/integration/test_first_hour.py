"""What a newcomer hits in the first hour with the CLI (issue 25): the version, roles as
written, a database that is named and never made by accident, every field a milestone
has. In-process through Typer's runner (no subprocess): the exit code and the one line
are what a shell would see."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import Engine as DBEngine
from typer.testing import CliRunner

from escrowflow.cli import app
from storage.errors import ValidationError
from tests.helpers import CLIENT, FREELANCER, Scenario
from workflows.actors import Actor, Role


def _run(*args: str, url: str) -> tuple[int, str, str]:
    done = CliRunner().invoke(app, list(args), env={"ESCROWFLOW_DATABASE_URL": url})
    return done.exit_code, done.stdout, done.stderr


def test_version_prints_the_installed_version_and_touches_no_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from importlib.metadata import version

    monkeypatch.chdir(tmp_path)
    code, out, _ = _run("--version", url="sqlite:///./escrowflow.db")
    assert (code, out.strip()) == (0, f"escrowflow {version('escrowflow')}")
    assert list(tmp_path.iterdir()) == []


def test_roles_are_case_sensitive_and_the_refusal_says_how_to_write_one() -> None:
    assert Actor.parse("client:acme") == Actor(Role.CLIENT, "acme")
    with pytest.raises(ValidationError) as refused:
        Actor.parse("Client:acme")
    assert refused.value.code == "unknown_role"
    assert "roles are lower case: client" in refused.value.message
    with pytest.raises(ValidationError, match="use one of client, freelancer"):
        Actor.parse("boss:acme")


def test_a_command_run_where_there_is_no_database_names_it_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = _run("contracts", "list", url="sqlite:///./escrowflow.db")
    assert code == 7 and err.count("\n") == 1, err
    assert str(tmp_path.resolve() / "escrowflow.db") in err and "escrowflow migrate" in err
    assert list(tmp_path.iterdir()) == []  # no empty database left behind
    # A file that is there but has no schema: the line names it too.
    (tmp_path / "empty.db").write_bytes(b"")
    code, _, err = _run("contracts", "list", url="sqlite:///./empty.db")
    assert code == 7 and err.count("\n") == 1, err
    assert str(tmp_path.resolve() / "empty.db") in err and "escrowflow migrate" in err
    # migrate is the one command that makes it.
    code, _, err = _run("migrate", url="sqlite:///./escrowflow.db")
    assert code == 0, err
    assert (tmp_path / "escrowflow.db").exists()
    assert _run("contracts", "list", url="sqlite:///./escrowflow.db")[0] == 0


def test_a_cli_actor_with_a_capitalised_role_is_refused_and_changes_nothing(
    sc: Scenario, db: DBEngine
) -> None:
    contract, _ = sc.offer(10_000)
    url = db.url.render_as_string(hide_password=False)
    code, _, err = _run(
        "fire", "contract", str(contract), "accept", "--as", "Freelancer:ada", url=url
    )
    assert code == 2 and "roles are lower case: freelancer" in err and err.count("\n") == 1
    assert sc.row("contract", contract)["state"] == "offer"


def test_show_milestone_prints_every_field_it_was_given(sc: Scenario, db: DBEngine) -> None:
    made = sc.engine.create_contract(
        CLIENT,
        {
            "freelancer_id": FREELANCER.party,
            "title": "Website",
            "currency": "EUR",
            "milestones": [
                {
                    "title": "Design",
                    "amount": 123_456,
                    "description": "Three mock-ups, one revised",
                    "due_date": "2026-02-01",
                }
            ],
        },
    )
    (milestone,) = [c["id"] for c in made["created"] if c["entity"] == "milestone"]
    url = db.url.render_as_string(hide_password=False)
    code, out, err = _run("show", "milestone", str(milestone), url=url)
    assert code == 0, err
    assert "Design: amount 1,234.56 EUR, in escrow 0.00 EUR, released 0.00 EUR" in out
    assert f"contract {made['id']}, position 1" in out
    assert "due date: 2026-02-01" in out
    assert "description: Three mock-ups, one revised" in out


@pytest.mark.slow  # starts `escrowflow serve` processes
def test_serve_on_an_address_in_use_exits_with_its_own_code_and_one_line(
    db: DBEngine, tmp_path: Path
) -> None:
    import os
    import socket
    import subprocess
    import sys

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    env = {**os.environ, "ESCROWFLOW_DATABASE_URL": db.url.render_as_string(hide_password=False)}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "escrowflow", "serve", "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        taken.close()
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 9, done.stderr
    assert errors == [
        f"error: address 127.0.0.1:{port} is in use: stop what listens there, or choose "
        "another with --port (or ESCROWFLOW_API_PORT)"
    ]


@pytest.mark.slow  # starts `escrowflow serve` processes
def test_a_second_worker_on_one_sqlite_file_is_refused_at_start_but_api_nodes_may_join(
    db: DBEngine, backend: str, tmp_path: Path
) -> None:
    """SQLite takes one worker (one writer for the whole file); API-only nodes beside it
    work. On PostgreSQL several serve processes share the database through their claims."""
    from tests.served import Server

    first = Server(db, tmp_path)
    second = third = None
    try:
        first.wait_ready()
        second = Server(db, tmp_path)
        if backend == "sqlite":
            assert second.process.wait(60) == 6
            errors = [
                line for line in second.log.read_text().splitlines() if line.startswith("error:")
            ]
            assert len(errors) == 1 and "another process already runs the worker" in errors[0]
            assert str(Path(db.url.database or "").resolve()) in errors[0]
        else:
            second.wait_ready()
        third = Server(db, tmp_path, "--no-worker")
        third.wait_ready()
        assert first.process.poll() is None
    finally:
        for server in (first, second, third):
            if server is not None:
                server.kill()
