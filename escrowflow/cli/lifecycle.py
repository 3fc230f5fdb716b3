"""Commands on lifecycles: migrate, offer, fire, show, history, next, diagrams."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from escrowflow.cli.common import (
    app,
    emit,
    emit_rows,
    errors,
    fail,
    json_arg,
    load_engine,
    load_settings,
)
from escrowflow.cli.options import As, AsJson, Entity, Id
from storage.db import make_engine
from workflows import views
from workflows.actors import Actor
from workflows.policy import format_money


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema (run once, and after every upgrade)."""
    settings = load_settings()
    with errors():
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
        typer.Option(
            help="TITLE=AMOUNT in minor units (cents), then ;due=YYYY-MM-DD and ;desc=TEXT if "
            "wanted; repeatable, e.g. 'Design=50000;due=2026-12-01;desc=Wireframes'."
        ),
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
    engine = load_engine()
    with errors():
        result = engine.create_contract(Actor.parse(actor), payload, idempotency_key)
    emit(result, as_json, _describe_result)


_MILESTONE_FIELDS = {"due": "due_date", "desc": "description"}


def _milestone_option(text: str) -> dict[str, Any]:
    """`TITLE=AMOUNT[;due=YYYY-MM-DD][;desc=TEXT]` as a milestone."""
    head, *rest = text.split(";")
    title, sep, amount = head.rpartition("=")
    if not sep or not title.strip():
        fail(f"--milestone {text!r} is not TITLE=AMOUNT, e.g. 'Design=50000'", 2)
    if not amount.strip().isdigit():
        fail(f"--milestone {text!r}: the amount must be whole minor units (cents), e.g. 50000", 2)
    found: dict[str, Any] = {"title": title.strip(), "amount": int(amount)}
    for part in rest:
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in _MILESTONE_FIELDS:
            fail(
                f"--milestone {text!r}: {part.strip()!r} is not due=YYYY-MM-DD or desc=TEXT, "
                "e.g. 'Design=50000;due=2026-12-01;desc=Wireframes'",
                2,
            )
        found[_MILESTONE_FIELDS[key.strip()]] = value.strip()
    return found


@app.command()
def fire(
    entity: Entity,
    entity_id: Id,
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
    payload = json_arg(data, "--data")
    engine = load_engine()
    with errors():
        result = engine.apply(
            entity, entity_id, event, Actor.parse(actor), payload, idempotency_key, expect_version
        )
    emit(result, as_json, _describe_result)


def _describe_result(result: dict[str, Any]) -> str:
    approval = result.get("approval")
    if approval is not None:  # PA4
        return (
            f"{result['entity']} {result['id']}: {result['event']} moving {approval['shown']} "
            f"waits for a second admin: escrowflow approvals approve {approval['id']} --as "
            "admin:SOMEONE-ELSE"
        )
    lines = [
        f"{result['entity']} {result['id']}: {result['event']} -> {result['state']} "
        f"(version {result['version']}){' [replayed]' if result['replayed'] else ''}"
    ]
    lines += [f"  created {c['entity']} {c['id']}" for c in result["created"]]
    return "\n".join(lines)


@app.command()
def show(
    entity: Entity,
    entity_id: Id,
    as_json: AsJson = False,
    diagram: Annotated[
        Path | None,
        typer.Option(help="Also draw its lifecycle, current state highlighted (.svg/.mmd/.dot)."),
    ] = None,
) -> None:
    """State, version, allowed events per role, pending deadlines and escrow of an entity."""
    engine = load_engine()
    with errors():
        view = views.show(engine.db, entity, entity_id)
        if diagram is not None:
            from escrowflow import diagrams

            drawn = diagrams.instance(
                engine.db, engine.terms, entity, entity_id, diagrams.format_of(diagram)
            )
            diagram.write_text(drawn)
    emit(view, as_json, _describe_view)
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
    settings = load_settings()
    from escrowflow import diagrams

    with errors():
        written = diagrams.write_all(
            out, format.split(","), settings.policy(), terms=settings.terms_name
        )
    typer.echo(f"wrote {len(written)} files to {out}/")


def _describe_view(view: dict[str, Any]) -> str:
    escrow = view["contract_escrow"]
    currency = escrow["currency"]
    lines = [f"{view['entity']} {view['id']}: {view['state']} (version {view['version']})"]
    if view["entity"] == "milestone":
        lines.append(
            f"  {view['title']}: amount {format_money(view['amount'], currency)}, "
            f"in escrow {format_money(view['escrow'], currency)}, released "
            f"{format_money(view['released_amount'], currency)}"
        )
        lines.append(f"  contract {view['contract_id']}, position {view['position']}")
        lines.append(f"  due date: {view['due_date'] or 'none given'}")
        if view["open_change_request_id"] is not None:
            lines.append(f"  open change request: {view['open_change_request_id']}")
        if view["description"]:
            lines.append(f"  description: {view['description']}")
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
def history(entity: Entity, entity_id: Id, as_json: AsJson = False) -> None:
    """Every transition of an entity: when, who, why (request or timer)."""
    emit_rows(
        lambda engine: views.history(engine.db, entity, entity_id),
        as_json,
        lambda r: (
            f"{r['at']}  v{r['version']}  {r['from_state'] or '-'} -> {r['to_state']}  "
            f"{r['event']} by {r['actor_role']}:{r['actor_party']} ({r['cause']})"
        ),
    )


@app.command("next")
def what_next(
    contract: Annotated[int, typer.Argument(metavar="CONTRACT")], as_json: AsJson = False
) -> None:
    """What happens next on a contract, and when, if nobody acts."""
    emit_rows(
        lambda engine: views.what_next(engine.db, contract),
        as_json,
        lambda r: r["summary"],
        f"nothing happens on contract {contract} unless someone acts",
    )
