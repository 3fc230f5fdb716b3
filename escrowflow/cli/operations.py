"""Commands for operators: the worker, its status, deadlines, fire-due, serve."""

from __future__ import annotations

import contextlib
import errno
import gc
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Annotated, Any

import pydantic
import typer

from escrowflow.cli.common import app, emit, emit_rows, errors, fail, load_engine, load_settings
from escrowflow.cli.options import As, AsJson, Id
from escrowflow.error_codes import ADDRESS_IN_USE
from escrowflow.logs import log_json_lines
from storage.db import sole_worker
from workflows import sweeper, views
from workflows.actors import Actor


@app.command()
def worker(
    interval: Annotated[float | None, typer.Option(help="Seconds between idle sweeps.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Deadlines claimed per batch.")] = None,
) -> None:
    """Run the daemon: fire due deadlines, now and as they fall due, until SIGTERM/SIGINT."""
    settings = load_settings()
    # APScheduler logs every run of the sweep job; our own batch lines say what matters.
    log_json_lines()
    engine = load_engine()
    from escrowflow.daemon import build_worker  # APScheduler, httpx: the daemon's own

    daemon = build_worker(settings, engine, interval=interval, batch_size=batch_size)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with errors(), sole_worker(settings.database_url):
        _settled()
        daemon.start()
        stop.wait()
        daemon.stop()  # the batch in hand finishes first


def _settled() -> None:
    """What a long-running process has built at start (modules, tables, the engine) is
    kept for its whole life: it leaves the garbage collector's sight (`gc.freeze`), so
    the full collections a busy sweep or request load triggers no longer walk it (6-7 %
    of a drain's time, bench/deadlines.py)."""
    gc.collect()
    gc.freeze()


@app.command()
def status(as_json: AsJson = False) -> None:
    """Workers alive, their last sweeps, pending and overdue deadlines, failing ones."""
    engine = load_engine()
    with errors():
        from scheduler.worker import worker_status

        report = worker_status(engine)
    emit(report, as_json, _describe_status)


def _skew(seconds: float | None) -> str:
    return "clock skew unknown" if seconds is None else f"clock skew {seconds:+.3f} s"


def _describe_status(report: dict[str, Any]) -> str:
    database = ", ".join(f"{key} {value}" for key, value in report["database"].items())
    lines = [
        f"now (the deployment's clock): {report['now'].isoformat()}; this host's "
        f"{_skew(report['clock_skew_seconds'])}",
        f"database: {database} (a promotion starts a new timeline)"
        if "timeline" in report["database"]
        else f"database: {database}",
        f"deadlines: {report['pending']} pending, {report['overdue']} overdue, "
        f"{len(report['failed'])} failed, {len(report['waiting_on_lock'])} waiting on a lock",
    ]
    for w in report["workers"]:
        state = "alive" if w["alive"] else ("stopped" if w["stopped_at"] else "silent")
        lines.append(
            f"worker {w['id']}: {state}, last seen {w['last_seen_at']}, last sweep "
            f"{w['last_sweep_at'] or 'never'}, fired {w['fired']}, stale {w['stale']}, "
            f"failed {w['failed']}, {_skew(w['clock_skew_seconds'])}"
        )
    for b in report["waiting_on_lock"]:
        lines.append(
            f"waiting on a lock: deadline {b['id']} ({b['entity']} {b['entity_id']} "
            f"{b['event']}): contract {b['contract_id']} held by another connection since "
            f"{b['blocked_since']}"
        )
    for f in report["failed"]:
        lines.append(
            f"failed: deadline {f['id']} ({f['entity']} {f['entity_id']} {f['event']}) after "
            f"{f['attempts']} attempts: {f['last_error']} (mend it, then `escrowflow "
            f"deadlines retry {f['id']}`)"
        )
    for f in report["failing"]:
        lines.append(
            f"failing: deadline {f['id']} ({f['entity']} {f['entity_id']} "
            f"{f['event']}) after {f['attempts']} attempts, retry at "
            f"{f['next_attempt_at']}: {f['last_error']}"
        )
    return "\n".join(lines)


deadlines_app = typer.Typer(
    help="Deadlines are data: list, pause, resume, extend, retry.", no_args_is_help=True
)
app.add_typer(deadlines_app, name="deadlines")


@deadlines_app.command("list")
def deadlines_list(
    overdue: Annotated[bool, typer.Option(help="Only those already due.")] = False,
    contract: Annotated[int | None, typer.Option(help="Only this contract's.")] = None,
    as_json: AsJson = False,
) -> None:
    """Pending deadlines, soonest first."""
    emit_rows(
        lambda engine: views.pending_deadlines(
            engine.db, overdue_at=engine.clock.now() if overdue else None, contract_id=contract
        ),
        as_json,
        lambda r: (
            f"{r['due_at']}  deadline {r['id']}: {r['event']} {r['entity']} {r['entity_id']} "
            f"(contract {r['contract_id']}){' [paused]' if r['paused'] else ''}"
            f"{' [failed]' if r.get('failed_at') else ''}"
        ),
        "no pending deadlines",
    )


def _adjust(deadline: int, action: str, actor: str, reason: str, by: str | None) -> None:
    extend_by = None
    if by is not None:
        try:
            extend_by = pydantic.TypeAdapter(timedelta).validate_python(by)
        except (pydantic.ValidationError, OverflowError):
            fail(f"--by {by!r} is not a duration: use ISO 8601 such as P2D or PT12H", 2)
    engine = load_engine()
    with errors():
        result = engine.adjust_deadline(deadline, action, Actor.parse(actor), reason, extend_by)
    typer.echo(f"deadline {deadline}: {action} -> {result['state']}, due {result['due_at']}")


Reason = Annotated[str, typer.Option(help="Why: recorded in the history.")]


@deadlines_app.command("pause")
def deadlines_pause(deadline: Id, actor: As, reason: Reason) -> None:
    """Stop a deadline from firing until it is resumed (dispute team)."""
    _adjust(deadline, "pause", actor, reason, None)


@deadlines_app.command("resume")
def deadlines_resume(deadline: Id, actor: As, reason: Reason) -> None:
    """Let a paused deadline fire again (at once if it is already due)."""
    _adjust(deadline, "resume", actor, reason, None)


@deadlines_app.command("extend")
def deadlines_extend(
    deadline: Id,
    actor: As,
    reason: Reason,
    by: Annotated[str, typer.Option(help="How much later, ISO 8601: P2D, PT12H.")],
) -> None:
    """Move a deadline later (dispute team)."""
    _adjust(deadline, "extend", actor, reason, by)


@deadlines_app.command("retry")
def deadlines_retry(deadline: Id, actor: As, reason: Reason) -> None:
    """Fire a failed deadline again, once its cause is mended (DL3, dispute team)."""
    _adjust(deadline, "retry", actor, reason, None)


@app.command("fire-due")
def fire_due() -> None:
    """Fire every deadline that is due now (the daemon will do this on a schedule)."""
    engine = load_engine()
    with errors():
        report = sweeper.fire_due(engine)
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

    settings = load_settings()
    log_json_lines()
    with contextlib.ExitStack() as held:
        if not no_worker:  # API-only nodes may share a SQLite file; its worker may not
            held.enter_context(errors())
            held.enter_context(sole_worker(settings.database_url))
        listening = _listen(host or settings.api_host, port or settings.api_port)
        with errors():
            api = create_app(settings, run_worker=not no_worker)
        config = uvicorn.Config(api, log_config=None, access_log=False)
        _settled()
        _graceful(config).run(sockets=[listening])


def _listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound here so that an address in use is one line and its own
    exit code rather than uvicorn's log and exit 1."""
    listening = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((host, port))
    except OSError as exc:
        listening.close()
        if exc.errno == errno.EADDRINUSE:
            fail(
                f"address {host}:{port} is in use: stop what listens there, or choose "
                "another with --port (or ESCROWFLOW_API_PORT)",
                ADDRESS_IN_USE,
            )
        fail(f"cannot listen on {host}:{port}: {exc.strerror}", ADDRESS_IN_USE)
    listening.listen(2048)
    listening.set_inheritable(True)
    return listening


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
