"""`escrowflow deadlines bulk ...`: an incident freeze (DL4). Preview what an action
would do to the deadlines a selection names, apply the preview by its id, undo it."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Annotated, Any

import pydantic
import typer

from escrowflow.cli.common import emit, fail, json_arg, run
from escrowflow.cli.operations import deadlines_app
from escrowflow.cli.options import As, AsJson, Id
from workflows import bulk
from workflows.actors import Actor

FOLLOW_SECONDS = 0.5
"""How often `bulk-show --follow` reads the job's progress."""
Where = Annotated[
    str,
    typer.Option(
        "--where",
        help='The selection as JSON, e.g. \'{"client_id": "acme", "events": ["auto_approve"]}\'.',
    ),
]


def preview_text(found: dict[str, Any]) -> str:
    results = ", ".join(f"{n} {k}" for k, n in sorted(found["results"].items()))
    lines = [
        f"bulk {found['id']} ({found['status']}): {found['action']} {found['deadlines']} "
        f"deadlines of {found['contracts']} contracts; valid until {found['valid_until']}",
        f"  progress: {found['progress']['done']:,}/{found['progress']['total']:,} deadlines",
        f"  results: {results or 'none yet'}",
    ]
    lines += [f"  {m['day']}  {m['shown']} ({m['deadlines']} deadlines)" for m in found["money"]]
    lines += [
        f"  deadline {i['deadline_id']} ({i['event']}, contract {i['contract_id']}) due "
        f"{i['due_at']}{': ' + i['result'] if i['result'] else ''}"
        for i in found["sample"]
    ]
    return "\n".join(lines)


@deadlines_app.command("bulk")
def deadlines_bulk(
    action: Annotated[str, typer.Argument(help="pause, resume, extend or retry")],
    actor: As,
    where: Where,
    by: Annotated[str | None, typer.Option(help="extend: how long, e.g. P2D.")] = None,
    as_json: AsJson = False,
) -> None:
    """Preview a bulk action on the deadlines a selection names; nothing changes yet."""
    selection = json_arg(where, "--where")
    extend_by = None
    if by is not None:
        try:
            extend_by = pydantic.TypeAdapter(timedelta).validate_python(by)
        except pydantic.ValidationError:
            fail(f"--by {by!r} is not a duration: use ISO 8601 such as P2D", 2)

    def make(engine: Any) -> dict[str, Any]:
        made = engine.preview_bulk(Actor.parse(actor), action, selection, extend_by)
        return bulk.show(engine.db, made["id"])

    emit(run(make), as_json, preview_text)


def _progress(done: int, total: int) -> None:
    typer.echo(f"  {done:,}/{total:,} deadlines", err=True)


@deadlines_app.command("bulk-apply")
def deadlines_bulk_apply(
    bulk_id: Id,
    actor: As,
    reason: Annotated[str, typer.Option(help="Why: recorded in each deadline's history.")],
    detach: Annotated[
        bool, typer.Option(help="Only apply it: the workers carry it out (see bulk-show).")
    ] = False,
) -> None:
    """Apply a preview by its id and carry it out here, showing progress (resumable: if
    this stops, a worker or another bulk-apply resumes it); --detach leaves it to the
    workers."""

    def act(engine: Any) -> dict[str, Any]:
        if detach:
            engine.start_bulk(Actor.parse(actor), bulk_id, reason)
            return bulk.show(engine.db, bulk_id)
        done: dict[str, Any] = engine.apply_bulk(
            Actor.parse(actor), bulk_id, reason, on_progress=_progress
        )
        return done

    result = run(act)
    if result.get("approval"):  # PA4
        approval = result["approval"]
        typer.echo(
            f"bulk {bulk_id} moves {approval['shown']}: it waits for a second admin "
            f"(approval {approval['id']}): escrowflow approvals approve {approval['id']} "
            "--as admin:SOMEONE-ELSE"
        )
        return
    counts = ", ".join(f"{n} {k}" for k, n in sorted(result["results"].items()))
    typer.echo(f"bulk {bulk_id}: {result['status']}: {counts}")


@deadlines_app.command("bulk-show")
def deadlines_bulk_show(
    bulk_id: Id,
    as_json: AsJson = False,
    follow: Annotated[
        bool, typer.Option(help="Print its progress until it is done (a worker runs it).")
    ] = False,
) -> None:
    """A bulk action: its preview, progress, results and a sample of its items."""

    def look(engine: Any) -> dict[str, Any]:
        found = bulk.show(engine.db, bulk_id)
        shown = -1
        while follow and found["status"] == "running":
            if found["progress"]["done"] != shown:
                shown = found["progress"]["done"]
                _progress(shown, found["progress"]["total"])
            time.sleep(FOLLOW_SECONDS)  # a person watching: not a test's wait
            found = bulk.show(engine.db, bulk_id)
        return found

    emit(run(look), as_json, preview_text)


@deadlines_app.command("bulk-undo")
def deadlines_bulk_undo(bulk_id: Id, actor: As, as_json: AsJson = False) -> None:
    """Preview the inverse of a bulk pause or resume, over the deadlines it acted on."""

    def make(engine: Any) -> dict[str, Any]:
        made = engine.undo_bulk(Actor.parse(actor), bulk_id)
        return bulk.show(engine.db, made["id"])

    emit(run(make), as_json, preview_text)
