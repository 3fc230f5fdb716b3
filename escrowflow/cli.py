"""The `escrowflow` command line. Errors: one line saying what to fix, non-zero exit."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, NoReturn

import pydantic
import typer

from escrowflow.settings import Settings
from storage.db import make_engine
from storage.errors import EscrowflowError
from storage.migrate import upgrade
from workflows import views
from workflows.actors import Actor
from workflows.clock import SystemClock
from workflows.engine import Engine
from workflows.policy import format_money

app = typer.Typer(
    help="escrowflow: escrow lifecycles of fixed-price contracts, applied exactly once.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

As = Annotated[str, typer.Option("--as", help="Who acts, as ROLE:PARTY (e.g. client:acme).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except EscrowflowError as exc:
        _fail(f"{exc.message} [{exc.code}]", exc.exit_code)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        _fail(f"setting ESCROWFLOW_{where.upper()}: {first['msg']}", 2)


def _settings() -> Settings:
    with _errors():
        return Settings()


def _engine() -> Engine:
    settings = _settings()
    with _errors():
        return Engine(make_engine(settings), settings.policy(), SystemClock())


def _json_arg(text: str | None, option: str) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        _fail(f"{option} is not valid JSON ({exc.msg} at column {exc.colno})", 2)
    if not isinstance(value, dict):
        _fail(f"{option} must be a JSON object, e.g. '{{\"amount\": 5000}}'", 2)
    return value


def _print(value: Any, as_json: bool, text: Callable[[Any], str]) -> None:
    typer.echo(json.dumps(value, indent=2, default=str) if as_json else text(value))


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema (run once, and after every upgrade)."""
    settings = _settings()
    with _errors():
        upgrade(make_engine(settings))
    typer.echo(f"database at {settings.database_url} is up to date")


@app.command()
def offer(
    actor: As,
    freelancer: Annotated[str, typer.Option(help="The freelancer the offer is for.")],
    title: Annotated[str, typer.Option(help="The contract's title.")],
    currency: Annotated[str, typer.Option(help="ISO 4217 code, e.g. USD.")] = "USD",
    kind: Annotated[str, typer.Option(help="fixed or hourly.")] = "fixed",
    milestone: Annotated[
        list[str] | None,
        typer.Option(help="TITLE=AMOUNT in minor units (cents), repeatable, e.g. 'Design=50000'."),
    ] = None,
    idempotency_key: Annotated[str | None, typer.Option()] = None,
    as_json: AsJson = False,
) -> None:
    """A client offers a contract (CT2), optionally with its milestones (MS2)."""
    payload: dict[str, Any] = {
        "freelancer_id": freelancer,
        "title": title,
        "currency": currency,
        "kind": kind,
    }
    if milestone:
        payload["milestones"] = [_milestone_option(m) for m in milestone]
    engine = _engine()
    with _errors():
        result = engine.create_contract(Actor.parse(actor), payload, idempotency_key)
    _print(result, as_json, _describe_result)


def _milestone_option(text: str) -> dict[str, Any]:
    title, sep, amount = text.rpartition("=")
    if not sep or not title.strip():
        _fail(f"--milestone {text!r} is not TITLE=AMOUNT, e.g. 'Design=50000'", 2)
    if not amount.strip().isdigit():
        _fail(f"--milestone {text!r}: the amount must be whole minor units (cents), e.g. 50000", 2)
    return {"title": title.strip(), "amount": int(amount)}


@app.command()
def fire(
    entity: Annotated[str, typer.Argument(help="contract, milestone, change_request, ...")],
    entity_id: Annotated[int, typer.Argument(metavar="ID")],
    event: Annotated[str, typer.Argument(help="The event, e.g. fund, submit, release.")],
    actor: As,
    data: Annotated[str | None, typer.Option(help="The event's payload as a JSON object.")] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="Makes a retry safe.")] = None,
    expect_version: Annotated[
        int | None, typer.Option(help="Refuse unless the entity is at this version.")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Apply an event to an entity as a party: `fire milestone 3 submit --as freelancer:ada`."""
    payload = _json_arg(data, "--data")
    engine = _engine()
    with _errors():
        result = engine.apply(
            entity, entity_id, event, Actor.parse(actor), payload, idempotency_key, expect_version
        )
    _print(result, as_json, _describe_result)


def _describe_result(result: dict[str, Any]) -> str:
    lines = [
        f"{result['entity']} {result['id']}: {result['event']} -> {result['state']} "
        f"(version {result['version']}){' [replayed]' if result['replayed'] else ''}"
    ]
    lines += [f"  created {c['entity']} {c['id']}" for c in result["created"]]
    return "\n".join(lines)


@app.command()
def show(
    entity: Annotated[str, typer.Argument()],
    entity_id: Annotated[int, typer.Argument(metavar="ID")],
    as_json: AsJson = False,
) -> None:
    """State, version, allowed events per role, pending deadlines and escrow of an entity."""
    engine = _engine()
    with _errors():
        view = views.show(engine.db, entity, entity_id)
    _print(view, as_json, _describe_view)


def _describe_view(view: dict[str, Any]) -> str:
    escrow = view["contract_escrow"]
    currency = escrow["currency"]
    lines = [f"{view['entity']} {view['id']}: {view['state']} (version {view['version']})"]
    if view["entity"] == "milestone":
        lines.append(
            f"  {view['title']}: amount {format_money(view['amount'], currency)}, "
            f"in escrow {format_money(view['escrow'], currency)}"
        )
    for role, events in view["allowed_events"].items():
        lines.append(f"  {role} may: {', '.join(events)}")
    for deadline in view["pending_deadlines"]:
        lines.append(f"  if nobody acts: {deadline['event']} at {deadline['due_at']}")
    lines.append(
        "  contract escrow: "
        + ", ".join(f"{k} {format_money(escrow[k], currency)}" for k in views.ESCROW_COLUMNS)
    )
    return "\n".join(lines)


@app.command()
def history(
    entity: Annotated[str, typer.Argument()],
    entity_id: Annotated[int, typer.Argument(metavar="ID")],
    as_json: AsJson = False,
) -> None:
    """Every transition of an entity: when, who, why (request or timer)."""
    engine = _engine()
    with _errors():
        rows = views.history(engine.db, entity, entity_id)
    _print(
        rows,
        as_json,
        lambda rs: "\n".join(
            f"{r['at']}  v{r['version']}  {r['from_state'] or '-'} -> {r['to_state']}  "
            f"{r['event']} by {r['actor_role']}:{r['actor_party']} ({r['cause']})"
            for r in rs
        ),
    )


@app.command("fire-due")
def fire_due() -> None:
    """Fire every deadline that is due now (the daemon will do this on a schedule)."""
    engine = _engine()
    with _errors():
        report = engine.fire_due_deadlines()
    typer.echo(f"fired {report.fired}, stale {report.stale}, failed {report.failed}")
    for error in report.errors:
        typer.echo(f"  {error}", err=True)
    if report.failed:
        raise typer.Exit(1)


def main() -> None:
    app(prog_name="escrowflow")


if __name__ == "__main__":  # pragma: no cover
    main()
