"""The `escrowflow` command line. Errors: one line saying what to fix, non-zero exit.

What only some commands need (alembic, APScheduler, httpx, uvicorn, the diagram code) is
imported inside them: every command pays for the module-level imports at start-up.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn

import pydantic
import typer

from escrowflow import tokens
from escrowflow.error_codes import exit_code
from escrowflow.settings import Settings
from storage.db import make_engine
from storage.errors import EscrowflowError
from workflows import deadlines, feed, views
from workflows.actors import Actor
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
        _fail(f"{exc.message} [{exc.code}]", exit_code(exc))
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
        return settings.engine()


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
        from storage.migrate import upgrade  # alembic: only this command needs it

        before, after = upgrade(make_engine(settings))
    where = settings.database_url
    if before is None:
        typer.echo(f"created the schema at revision {after} in {where}")
    elif before == after:
        typer.echo(f"{where} is already at revision {after}: nothing to do")
    else:
        typer.echo(f"upgraded {where} from revision {before} to {after}")


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
    diagram: Annotated[
        Path | None,
        typer.Option(help="Also draw its lifecycle, current state highlighted (.svg/.mmd/.dot)."),
    ] = None,
) -> None:
    """State, version, allowed events per role, pending deadlines and escrow of an entity."""
    engine = _engine()
    with _errors():
        view = views.show(engine.db, entity, entity_id)
        if diagram is not None:
            from escrowflow import diagrams

            drawn = diagrams.instance(
                engine.db, engine.policy, entity, entity_id, diagrams.format_of(diagram)
            )
            diagram.write_text(drawn)
    _print(view, as_json, _describe_view)
    if diagram is not None:
        typer.echo(f"diagram: {diagram}", err=True)


@app.command("diagrams")
def draw_diagrams(
    out: Annotated[Path, typer.Option(help="Directory to write into.")] = Path("diagrams"),
    format: Annotated[
        str, typer.Option(help="Comma-separated: svg, mermaid, dot.")
    ] = "svg,mermaid,dot",
) -> None:
    """Draw every lifecycle from the machines, timers labelled from the current settings."""
    settings = _settings()
    from escrowflow import diagrams

    with _errors():
        written = diagrams.write_all(out, format.split(","), settings.policy())
    typer.echo(f"wrote {len(written)} files to {out}/")


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


@app.command()
def worker(
    interval: Annotated[float | None, typer.Option(help="Seconds between idle sweeps.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Deadlines claimed per batch.")] = None,
) -> None:
    """Run the daemon: fire due deadlines, now and as they fall due, until SIGTERM/SIGINT."""
    settings = _settings()
    logging.basicConfig(level=logging.INFO, handlers=[_json_handler()], force=True)
    # APScheduler logs every run of the sweep job; our own batch lines say what matters.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    engine = _engine()
    from escrowflow.daemon import build_worker  # APScheduler, httpx: the daemon's own

    daemon = build_worker(settings, engine, interval=interval, batch_size=batch_size)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with _errors():
        daemon.start()
        stop.wait()
        daemon.stop()  # the batch in hand finishes first


def _json_handler() -> logging.Handler:
    from scheduler.worker import JsonLines

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines())
    return handler


@app.command()
def status(as_json: AsJson = False) -> None:
    """Workers alive, their last sweeps, pending and overdue deadlines, failing ones."""
    engine = _engine()
    with _errors():
        from scheduler.worker import worker_status

        report = worker_status(engine)
    _print(report, as_json, _describe_status)


def _describe_status(report: dict[str, Any]) -> str:
    lines = [f"deadlines: {report['pending']} pending, {report['overdue']} overdue"]
    for w in report["workers"]:
        state = "alive" if w["alive"] else ("stopped" if w["stopped_at"] else "silent")
        lines.append(
            f"worker {w['id']}: {state}, last sweep {w['last_sweep_at'] or 'never'}, "
            f"fired {w['fired']}, stale {w['stale']}, failed {w['failed']}"
        )
    for f in report["failing"]:
        lines.append(
            f"failing: deadline {f['id']} ({f['entity']} {f['entity_id']} "
            f"{f['event']}) after {f['attempts']} attempts, retry at "
            f"{f['next_attempt_at']}: {f['last_error']}"
        )
    return "\n".join(lines)


deadlines_app = typer.Typer(
    help="Deadlines are data: list, pause, resume, extend.", no_args_is_help=True
)
app.add_typer(deadlines_app, name="deadlines")


@deadlines_app.command("list")
def deadlines_list(
    overdue: Annotated[bool, typer.Option(help="Only those already due.")] = False,
    contract: Annotated[int | None, typer.Option(help="Only this contract's.")] = None,
    as_json: AsJson = False,
) -> None:
    """Pending deadlines, soonest first."""
    engine = _engine()
    with _errors():
        rows = views.pending_deadlines(
            engine.db, overdue_at=engine.clock.now() if overdue else None, contract_id=contract
        )
    _print(
        rows,
        as_json,
        lambda rs: (
            "\n".join(
                f"{r['due_at']}  deadline {r['id']}: {r['event']} {r['entity']} {r['entity_id']} "
                f"(contract {r['contract_id']}){' [paused]' if r['paused'] else ''}"
                for r in rs
            )
            or "no pending deadlines"
        ),
    )


def _adjust(deadline: int, action: str, actor: str, reason: str, by: str | None) -> None:
    extend_by = None
    if by is not None:
        try:
            extend_by = pydantic.TypeAdapter(timedelta).validate_python(by)
        except pydantic.ValidationError:
            _fail(f"--by {by!r} is not a duration: use ISO 8601 such as P2D or PT12H", 2)
    engine = _engine()
    with _errors():
        result = engine.adjust_deadline(deadline, action, Actor.parse(actor), reason, extend_by)
    typer.echo(f"deadline {deadline}: {action} -> {result['state']}, due {result['due_at']}")


Reason = Annotated[str, typer.Option(help="Why: recorded in the history.")]
DeadlineId = Annotated[int, typer.Argument(metavar="ID")]


@deadlines_app.command("pause")
def deadlines_pause(deadline: DeadlineId, actor: As, reason: Reason) -> None:
    """Stop a deadline from firing until it is resumed (dispute team)."""
    _adjust(deadline, "pause", actor, reason, None)


@deadlines_app.command("resume")
def deadlines_resume(deadline: DeadlineId, actor: As, reason: Reason) -> None:
    """Let a paused deadline fire again (at once if it is already due)."""
    _adjust(deadline, "resume", actor, reason, None)


@deadlines_app.command("extend")
def deadlines_extend(
    deadline: DeadlineId,
    actor: As,
    reason: Reason,
    by: Annotated[str, typer.Option(help="How much later, ISO 8601: P2D, PT12H.")],
) -> None:
    """Move a deadline later (dispute team)."""
    _adjust(deadline, "extend", actor, reason, by)


@app.command("next")
def what_next(
    contract: Annotated[int, typer.Argument(metavar="CONTRACT")], as_json: AsJson = False
) -> None:
    """What happens next on a contract, and when, if nobody acts."""
    engine = _engine()
    with _errors():
        rows = views.what_next(engine.db, contract)
    _print(
        rows,
        as_json,
        lambda rs: (
            "\n".join(r["summary"] for r in rs)
            or f"nothing happens on contract {contract} unless someone acts"
        ),
    )


@app.command("fire-due")
def fire_due() -> None:
    """Fire every deadline that is due now (the daemon will do this on a schedule)."""
    engine = _engine()
    with _errors():
        report = deadlines.fire_due(engine)
    typer.echo(f"fired {report.fired}, stale {report.stale}, failed {report.failed}")
    for error in report.errors:
        typer.echo(f"  {error}", err=True)
    if report.failed:
        raise typer.Exit(1)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="API only: leave deadlines to other workers.")
    ] = False,
) -> None:
    """Run the HTTP API, and the worker in the same process unless --no-worker."""
    import uvicorn

    from escrowflow.api import create_app

    settings = _settings()
    logging.basicConfig(level=logging.INFO, handlers=[_json_handler()], force=True)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    with _errors():
        api = create_app(settings, run_worker=not no_worker)
    config = uvicorn.Config(
        api,
        host=host or settings.api_host,
        port=port or settings.api_port,
        log_config=None,
        access_log=False,
    )
    _graceful(config).run()


def _graceful(config: Any) -> Any:
    """uvicorn's server, except that SIGTERM/SIGINT end it with exit 0 after a clean
    shutdown (the app's shutdown lets the worker's batch finish), as `escrowflow worker`
    does; uvicorn itself re-raises the signal once shut down (exit -15)."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextmanager
        def capture_signals(self) -> Iterator[None]:
            def stop(*_: Any) -> None:
                self.should_exit = True

            previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
            try:
                yield
            finally:
                for signum, handler in previous.items():
                    signal.signal(signum, handler)

    return Server(config)


tokens_app = typer.Typer(help="API bearer tokens: one per calling service.", no_args_is_help=True)
app.add_typer(tokens_app, name="tokens")


@tokens_app.command("create")
def tokens_create(
    service: Annotated[str, typer.Argument(help="The calling service, e.g. web-backend.")],
    scope: Annotated[
        list[str],
        typer.Option(
            help="Repeatable: act:client, act:freelancer, act:admin, read, webhooks.",
        ),
    ],
    as_json: AsJson = False,
) -> None:
    """Create a token; it is printed once and stored only as a hash."""
    engine = _engine()
    with _errors():
        created = tokens.create(engine.db, engine.clock.now(), service, scope)
    _print(
        created,
        as_json,
        lambda c: (
            f"token {c['id']} for {c['service']} ({', '.join(c['scopes'])}):\n"
            f"{c['token']}\nKeep it now: it is not shown again."
        ),
    )


@tokens_app.command("list")
def tokens_list(as_json: AsJson = False) -> None:
    """Every token: id, service, scopes, prefix, and whether it is revoked."""
    engine = _engine()
    with _errors():
        rows = tokens.listing(engine.db)
    _print(
        rows,
        as_json,
        lambda rs: (
            "\n".join(
                f"{r['id']:>4}  {r['service']:<20} {r['prefix']}...  {','.join(r['scopes'])}"
                + (f"  revoked {r['revoked_at']:%Y-%m-%d}" if r["revoked_at"] else "")
                for r in rs
            )
            or "no tokens: escrowflow tokens create SERVICE --scope read"
        ),
    )


@tokens_app.command("revoke")
def tokens_revoke(token_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Revoke a token: requests with it get 401 from now on."""
    engine = _engine()
    with _errors():
        tokens.revoke(engine.db, engine.clock.now(), token_id)
    typer.echo(f"token {token_id} revoked")


webhooks_app = typer.Typer(help="Webhook subscriptions and deliveries.", no_args_is_help=True)
app.add_typer(webhooks_app, name="webhooks")


@webhooks_app.command("add")
def webhooks_add(
    url: Annotated[str, typer.Argument(help="Where to POST events.")],
    event: Annotated[
        list[str] | None, typer.Option(help="Repeatable ENTITY.EVENT pattern (milestone.*).")
    ] = None,
    description: Annotated[str, typer.Option()] = "",
    as_json: AsJson = False,
) -> None:
    """Subscribe a URL; the signing secret is printed once."""
    engine = _engine()
    with _errors():
        sub = feed.subscribe(
            engine.db,
            engine.clock.now(),
            url,
            event or (),
            None,
            description,
            allow_private=_settings().webhook_allow_private,
        )
    _print(
        sub,
        as_json,
        lambda s: (
            f"subscription {s['id']} -> {s['url']} "
            f"({', '.join(s['event_types']) or 'all events'})\nsecret: {s['secret']}"
        ),
    )


@webhooks_app.command("list")
def webhooks_list(as_json: AsJson = False) -> None:
    """Live subscriptions."""
    engine = _engine()
    with _errors():
        rows = feed.subscriptions(engine.db)
    _print(
        rows,
        as_json,
        lambda rs: (
            "\n".join(
                f"{r['id']:>4}  {r['url']}  {', '.join(r['event_types']) or 'all events'}"
                for r in rs
            )
            or "no subscriptions: escrowflow webhooks add URL"
        ),
    )


@webhooks_app.command("remove")
def webhooks_remove(subscription_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Unsubscribe; what was still owed to it is dead-lettered."""
    engine = _engine()
    with _errors():
        feed.unsubscribe(engine.db, engine.clock.now(), subscription_id)
    typer.echo(f"subscription {subscription_id} removed")


@webhooks_app.command("deliveries")
def webhooks_deliveries(
    status: Annotated[str | None, typer.Option(help="pending, delivered or dead.")] = None,
    as_json: AsJson = False,
) -> None:
    """Deliveries and their attempts."""
    engine = _engine()
    with _errors():
        rows = feed.deliveries(engine.db, status=status)
    _print(
        rows,
        as_json,
        lambda rs: (
            "\n".join(
                f"{r['id']:>6}  sub {r['subscription_id']}  {r['type']:<28} {r['status']:<9} "
                f"attempts {r['attempts']}  {r['last_error'] or ''}"
                for r in rs
            )
            or "no deliveries"
        ),
    )


@webhooks_app.command("replay")
def webhooks_replay(
    delivery: Annotated[int | None, typer.Option(help="One dead-lettered delivery.")] = None,
    subscription: Annotated[
        int | None, typer.Option(help="All dead ones of a subscription.")
    ] = None,
) -> None:
    """Send dead-lettered deliveries again (all of them without options)."""
    engine = _engine()
    with _errors():
        count = feed.replay(
            engine.db, engine.clock.now(), delivery_id=delivery, subscription_id=subscription
        )
    typer.echo(f"{count} deliveries queued again")


def main() -> None:
    app(prog_name="escrowflow")


if __name__ == "__main__":  # pragma: no cover
    main()
