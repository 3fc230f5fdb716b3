"""`escrowflow approvals ...`: money decisions waiting for a second admin (PA4)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from escrowflow.cli.common import emit, group, run
from escrowflow.cli.options import As, AsJson, Id
from workflows.actors import Actor

approvals_app = group("approvals", "Money decisions waiting for a second admin (PA4).")


def _line(a: dict[str, Any]) -> str:
    decided = f", {a['status']} by {a['decided_by']}" if a["decided_by"] else ""
    return (
        f"approval {a['id']} ({a['status']}): {a['event']} {a['entity']} {a['entity_id']} "
        f"moving {a['shown']}, proposed by {a['proposed_by']} at {a['proposed_at']}{decided}"
    )


@approvals_app.command("list")
def approvals_list(
    actor: As,
    all_: Annotated[bool, typer.Option("--all", help="Decided ones too.")] = False,
    as_json: AsJson = False,
) -> None:
    """What waits for a second admin (newest first)."""
    emit(
        run(lambda engine: engine.decisions(Actor.parse(actor), None if all_ else "pending")),
        as_json,
        lambda rows: "\n".join(_line(r) for r in rows) or "nothing waits for a second admin",
    )


@approvals_app.command("approve")
def approvals_approve(
    approval: Id,
    actor: As,
    reason: Annotated[str | None, typer.Option(help="Why, recorded in history.")] = None,
) -> None:
    """Approve as a second, different admin: the decision happens now."""
    done = run(lambda engine: engine.approve_decision(Actor.parse(actor), approval, reason))
    typer.echo(f"approval {approval} approved: {done['entity']} {done['id']} is {done['state']}")


@approvals_app.command("reject")
def approvals_reject(
    approval: Id,
    actor: As,
    reason: Annotated[str, typer.Option(help="Why, recorded in history.")],
) -> None:
    """Reject a proposed decision: nothing moves."""
    done = run(lambda engine: engine.reject_decision(Actor.parse(actor), approval, reason))
    typer.echo(_line(done))
