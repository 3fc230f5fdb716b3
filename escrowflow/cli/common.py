"""What every command shares: the Typer app, settings, the engine, errors as one line
and a non-zero exit (codes from `escrowflow/error_codes.py`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import pydantic
import typer

from escrowflow.error_codes import exit_code
from escrowflow.settings import Settings
from storage.errors import EscrowflowError
from workflows.engine import EscrowEngine

T = TypeVar("T")

app = typer.Typer(
    help="escrowflow: escrow lifecycles of fixed-price contracts, applied exactly once.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def group(name: str, help: str) -> typer.Typer:
    """A group of commands, `escrowflow NAME ...`."""
    commands = typer.Typer(help=help, no_args_is_help=True)
    app.add_typer(commands, name=name)
    return commands


def fail(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def errors() -> Iterator[None]:
    try:
        yield
    except EscrowflowError as exc:
        fail(f"{exc.message} [{exc.code}]", exit_code(exc))
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        setting = str(first["loc"][0]).upper() if first["loc"] else "?"
        fail(f"setting ESCROWFLOW_{setting}: {first['msg']}", 2)


def load_settings() -> Settings:
    with errors():
        return Settings()


def load_engine() -> EscrowEngine:
    settings = load_settings()
    with errors():
        return settings.engine()


def json_arg(text: str | None, option: str) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{option} is not valid JSON ({exc.msg} at column {exc.colno})", 2)
    if not isinstance(value, dict):
        fail(f"{option} must be a JSON object, e.g. '{{\"amount\": 5000}}'", 2)
    return value


def run(action: Callable[[EscrowEngine], T]) -> T:
    """Do `action` with the engine; an error ends the command with one line and its exit
    code."""
    engine = load_engine()
    with errors():
        return action(engine)


def emit_rows(
    fetch: Callable[[EscrowEngine], list[dict[str, Any]]],
    as_json: bool,
    line: Callable[[Any], str],
    empty: str = "",
) -> None:
    """A list read from the database: JSON, or one line per row (`empty` when there is
    none). Errors end the command with one line and the error's exit code."""
    emit(run(fetch), as_json, lambda rs: "\n".join(line(r) for r in rs) or empty)


def emit(value: Any, as_json: bool, text: Callable[[Any], str]) -> None:
    typer.echo(json.dumps(value, indent=2, default=str) if as_json else text(value))
