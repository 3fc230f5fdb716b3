"""Routes that manage webhook subscriptions and their deliveries."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool as offload

from escrowflow import resources, schemas
from escrowflow.api.deps import MAX_ID, READ_ERRORS, EngineDep, WebhookAdmin, api_router
from storage.deliveries import DeliveryFilter
from workflows import feed


def router() -> APIRouter:
    router = api_router(prefix="/v1/webhooks", tags=["webhooks"], responses=READ_ERRORS)

    @router.post("", status_code=201, summary="Subscribe a URL to events")
    async def create_webhook(
        request: Request, body: schemas.SubscriptionCreate, caller: WebhookAdmin, engine: EngineDep
    ) -> schemas.SubscriptionCreated:
        created = await offload(
            partial(
                feed.subscribe,
                description=body.description,
                allow_private=request.app.state.settings.webhook_allow_private,
            ),
            engine.db,
            engine.clock.now(),
            body.url,
            body.event_types,
        )
        return schemas.SubscriptionCreated.model_validate(created)

    @router.get("", summary="Live subscriptions (without their secrets)")
    async def list_webhooks(caller: WebhookAdmin, engine: EngineDep) -> resources.SubscriptionPage:
        rows = await offload(feed.subscriptions, engine.db)
        return resources.SubscriptionPage.model_validate({"items": rows, "next_cursor": None})

    @router.delete("/{subscription_id}", status_code=204, summary="Unsubscribe")
    async def delete_webhook(
        subscription_id: Annotated[int, Path(ge=1, le=MAX_ID)],
        caller: WebhookAdmin,
        engine: EngineDep,
    ) -> Response:
        await offload(feed.unsubscribe, engine.db, engine.clock.now(), subscription_id)
        return Response(status_code=204)

    @router.get("/deliveries", summary="Deliveries, e.g. the dead-lettered ones")
    async def list_deliveries(
        caller: WebhookAdmin,
        engine: EngineDep,
        status: Annotated[str | None, Query(pattern="^(pending|delivered|dead)$")] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: Annotated[str | None, Query(pattern="^[0-9]{1,10}$")] = None,
    ) -> schemas.DeliveryPage:
        after = int(cursor) if cursor else None
        rows = await offload(
            feed.deliveries, engine.db, DeliveryFilter(status=status, after=after, limit=limit)
        )
        items = [schemas.DeliveryOut.model_validate(r) for r in rows]
        more = str(items[-1].id) if len(items) == limit else None
        return schemas.DeliveryPage(items=items, next_cursor=more)

    @router.post("/deliveries/{delivery_id}/replay", summary="Send a dead-lettered delivery again")
    async def replay_delivery(
        delivery_id: Annotated[int, Path(ge=1, le=MAX_ID)],
        caller: WebhookAdmin,
        engine: EngineDep,
    ) -> schemas.ReplayOut:
        count = await offload(
            partial(feed.replay, delivery_id=delivery_id), engine.db, engine.clock.now()
        )
        return schemas.ReplayOut(replayed=count)

    return router
