"""`escrowflow terms ...`: the terms contracts run under (TM1) and the plans that move
running contracts to other terms (TM2)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from escrowflow.cli.common import emit, emit_rows, fail, group, run
from escrowflow.cli.options import As, AsJson, Id
from workflows import terms, terms_migration
from workflows.actors import Actor

terms_app = group("terms", "Terms contracts run under, and plans moving them to others.")


def _terms_text(t: dict[str, Any]) -> str:
    durations = ", ".join(f"{name} {length}" for name, length in t["durations"].items())
    return f"terms {t['id']} {t['name']}: {durations}; {t['contracts']} contracts"


@terms_app.command("list")
def terms_list(as_json: AsJson = False) -> None:
    """Every terms version, oldest first, with how many contracts run under each."""
    emit_rows(lambda engine: terms.listing(engine.db), as_json, _terms_text, "no terms yet")


@terms_app.command("show")
def terms_show(terms_id: Id, as_json: AsJson = False) -> None:
    """One terms version: durations, reminders, minimum amounts, milestone limit."""

    def text(t: dict[str, Any]) -> str:
        reminders = "; ".join(f"{n} {', '.join(v)} before" for n, v in t["reminders"].items())
        minimums = ", ".join(f"{c} {a}" for c, a in t["minimum_amounts"].items())
        return "\n".join(
            [
                _terms_text(t),
                f"  created {t['created_at']} by {t['created_by']}",
                f"  reminders: {reminders or 'none'}",
                f"  minimum amounts (minor units): {minimums or 'the default'}",
                f"  at most {t['max_milestones']} milestones",
            ]
        )

    emit(run(lambda engine: terms.show(engine.db, terms_id)), as_json, text)


def plan_text(plan: dict[str, Any]) -> str:
    """A plan for people: what it moves, the money per day, the first deadlines."""
    lines = [
        f"plan {plan['id']} ({plan['status']}): to terms {plan['to_terms_id']}, "
        f"{plan['contracts']} contracts, {plan['deadlines']} deadlines moved, "
        f"{plan['due_at_once']} due at once; valid until {plan['valid_until']}",
    ]
    if plan["contracts_applied"]:
        lines.append(f"  applied to {plan['contracts_applied']} of {plan['contracts']} contracts")
    lines += [f"  {row['day']}  {row['shown']}" for row in plan["forecast"]]
    for move in plan["moves"] or []:
        lines.append(
            f"  deadline {move['deadline_id']} ({move['event']} {move['entity']} "
            f"{move['entity_id']}, contract {move['contract_id']}): "
            f"{move['due_before']} -> {move['due_after']}"
        )
    if plan.get("moves_after"):
        lines.append(f"  ... more: escrowflow terms plan-show {plan['id']} --json")
    return "\n".join(lines)


@terms_app.command("plan")
def terms_plan(
    actor: As,
    to: Annotated[int, typer.Option("--to", help="The terms' id to move to.")],
    from_terms: Annotated[int | None, typer.Option("--from", help="Contracts on these.")] = None,
    client: Annotated[str | None, typer.Option(help="Only this client's.")] = None,
    freelancer: Annotated[str | None, typer.Option(help="Only this freelancer's.")] = None,
    contract: Annotated[
        list[int] | None, typer.Option(help="Only these contracts (repeat the option).")
    ] = None,
    state: Annotated[list[str] | None, typer.Option(help="Only in these states.")] = None,
    as_json: AsJson = False,
) -> None:
    """Preview moving running contracts to other terms; nothing changes until applied."""
    selection = {
        "terms_id": from_terms,
        "client_id": client,
        "freelancer_id": freelancer,
        "ids": contract or None,
        "states": state or None,
    }
    chosen = {name: value for name, value in selection.items() if value is not None}

    def make(engine: Any) -> dict[str, Any]:
        made = engine.plan_terms(Actor.parse(actor), to, chosen)
        return terms_migration.show(engine.db, made["id"])

    emit(run(make), as_json, plan_text)


@terms_app.command("plan-show")
def terms_plan_show(
    plan_id: Id,
    after: Annotated[int | None, typer.Option(help="Moves after this deadline id.")] = None,
    as_json: AsJson = False,
) -> None:
    """A stored plan, with a page of the deadlines it moves."""
    emit(run(lambda engine: terms_migration.show(engine.db, plan_id, after)), as_json, plan_text)


@terms_app.command("plans")
def terms_plans(as_json: AsJson = False) -> None:
    """Plans, newest first."""
    emit_rows(lambda engine: terms_migration.listing(engine.db), as_json, plan_text, "no plans")


@terms_app.command("apply")
def terms_apply(
    plan_id: Id,
    actor: As,
    reason: Annotated[str, typer.Option(help="Why: recorded in each contract's history.")],
) -> None:
    """Apply a plan exactly as previewed (resumable; a second apply changes nothing)."""
    if not reason.strip():
        fail("--reason is empty: say why, it is recorded in each contract's history", 2)

    def progress(done: int, total: int) -> None:
        if done == total or done % 500 == 0:
            typer.echo(f"  {done}/{total} contracts moved", err=True)

    result = run(
        lambda engine: engine.apply_terms_plan(
            Actor.parse(actor), plan_id, reason, on_progress=progress
        )
    )
    typer.echo(f"plan {plan_id}: {result['status']}, {result['moved']} contracts moved now")
