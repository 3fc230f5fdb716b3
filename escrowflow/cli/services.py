"""Commands for the services around: API tokens and webhook subscriptions."""

from __future__ import annotations

from typing import Annotated

import typer

from escrowflow import tokens
from escrowflow.cli.common import emit, emit_rows, errors, group, load_engine, load_settings, run
from escrowflow.cli.options import AsJson, Id
from storage.deliveries import DeliveryFilter
from workflows import feed

tokens_app = group("tokens", "API bearer tokens: one per calling service.")


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
    engine = load_engine()
    with errors():
        created = tokens.create(engine.db, engine.clock.now(), service, scope)
    emit(
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
    emit_rows(
        lambda engine: tokens.listing(engine.db),
        as_json,
        lambda r: (
            f"{r['id']:>4}  {r['service']:<20} {r['prefix']}...  {','.join(r['scopes'])}"
            + (f"  revoked {r['revoked_at']:%Y-%m-%d}" if r["revoked_at"] else "")
        ),
        "no tokens: escrowflow tokens create SERVICE --scope read",
    )


@tokens_app.command("revoke")
def tokens_revoke(token_id: Id) -> None:
    """Revoke a token: requests with it get 401 from now on."""
    run(lambda engine: tokens.revoke(engine.db, engine.clock.now(), token_id))
    typer.echo(f"token {token_id} revoked")


webhooks_app = group("webhooks", "Webhook subscriptions and deliveries.")


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
    engine = load_engine()
    with errors():
        sub = feed.subscribe(
            engine.db,
            engine.clock.now(),
            url,
            event or (),
            None,
            description,
            allow_private=load_settings().webhook_allow_private,
        )
    emit(
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
    emit_rows(
        lambda engine: feed.subscriptions(engine.db),
        as_json,
        lambda r: f"{r['id']:>4}  {r['url']}  {', '.join(r['event_types']) or 'all events'}",
        "no subscriptions: escrowflow webhooks add URL",
    )


@webhooks_app.command("remove")
def webhooks_remove(subscription_id: Id) -> None:
    """Unsubscribe; what was still owed to it is dead-lettered."""
    run(lambda engine: feed.unsubscribe(engine.db, engine.clock.now(), subscription_id))
    typer.echo(f"subscription {subscription_id} removed")


@webhooks_app.command("deliveries")
def webhooks_deliveries(
    status: Annotated[str | None, typer.Option(help="pending, delivered or dead.")] = None,
    as_json: AsJson = False,
) -> None:
    """Deliveries and their attempts."""
    emit_rows(
        lambda engine: feed.deliveries(engine.db, DeliveryFilter(status=status)),
        as_json,
        lambda r: (
            f"{r['id']:>6}  sub {r['subscription_id']}  {r['type']:<28} {r['status']:<9} "
            f"attempts {r['attempts']}  {r['last_error'] or ''}"
        ),
        "no deliveries",
    )


@webhooks_app.command("replay")
def webhooks_replay(
    delivery: Annotated[int | None, typer.Option(help="One dead-lettered delivery.")] = None,
    subscription: Annotated[
        int | None, typer.Option(help="All dead ones of a subscription.")
    ] = None,
) -> None:
    """Send dead-lettered deliveries again (all of them without options)."""
    engine = load_engine()
    with errors():
        count = feed.replay(
            engine.db, engine.clock.now(), delivery_id=delivery, subscription_id=subscription
        )
    typer.echo(f"{count} deliveries queued again")
