"""What every command shares: the Typer app, settings, the engine, errors as one line
and a non-zero exit (codes from `escrowflow/error_codes.py`)."""

from __future__ import annotations

import atexit
import contextlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, NoReturn, TypeVar

import pydantic
import typer

from escrowflow.error_codes import exit_code
from escrowflow.settings import Settings
from storage.errors import EscrowflowError
from workflows.engine import EscrowEngine

T = TypeVar("T")

# Errors that are about which database: the line says which one this command used.
_NAMES_THE_DATABASE = frozenset({"not_migrated", "database_unreachable"})

app = typer.Typer(
    help="escrowflow: escrow lifecycles of fixed-price contracts, applied exactly once.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version(asked: bool) -> None:
    if asked:
        from importlib.metadata import version

        typer.echo(f"escrowflow {version('escrowflow')}")
        raise typer.Exit(0)


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """escrowflow: escrow lifecycles of fixed-price contracts, applied exactly once."""


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
        message = exc.message
        if exc.code in _NAMES_THE_DATABASE:
            with contextlib.suppress(pydantic.ValidationError):
                shown = Settings().database_shown()
                if shown not in message:
                    message = f"{message} (database: {shown})"
        fail(f"{message} [{exc.code}]", exit_code(exc))
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        setting = str(first["loc"][0]).upper() if first["loc"] else "?"
        fail(f"setting ESCROWFLOW_{setting}: {first['msg']}", 2)


def load_settings() -> Settings:
    with errors():
        return Settings()


_OPEN: list[EscrowEngine] = []


def load_engine() -> EscrowEngine:
    """The engine of these settings; its connections are closed as the process ends
    (the server sees a goodbye, not a dropped socket), or at `close_engines`."""
    settings = load_settings()
    with errors():
        engine = settings.engine()
    atexit.unregister(close_engines)  # once, however many commands one process runs
    atexit.register(close_engines)
    _OPEN.append(engine)
    return engine


def close_engines() -> None:
    """Close every engine a command opened (a command run in-process, then the next)."""
    while _OPEN:
        _OPEN.pop().close()


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
