"""Routes that list, Stripe-style: `{"items": [...], "next_cursor": ...}` pages of
contracts, a contract's milestones, change requests, proposals, refunds and deadlines.

A `read` or admin token sees every row; a party's token names its party in the
Escrowflow-Actor header and sees only its own contracts' rows. A query parameter a list
does not take is refused (422 `unknown_filter`), as is `limit` above 200.
"""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from sqlalchemy.engine import Engine as DBEngine
from starlette.concurrency import run_in_threadpool as offload

from escrowflow import resources
from escrowflow.api.deps import (
    MAX_ID,
    READ_ERRORS,
    ActorHeader,
    CallerDep,
    EngineDep,
    EntityId,
    api_router,
)
from storage.errors import PermissionDenied, ValidationError
from workflows import lists
from workflows.actors import Actor, Role

Limit = Annotated[
    int, Query(ge=1, le=lists.MAX_LIMIT, description=f"1 to {lists.MAX_LIMIT}; default 50.")
]
Cursor = Annotated[
    str | None, Query(max_length=200, description="The `next_cursor` of the previous page.")
]
State = Annotated[str | None, Query(max_length=40, description="Only rows in this state.")]
Party = Annotated[str | None, Query(max_length=100)]
ContractId = Annotated[int | None, Query(ge=1, le=MAX_ID, description="Only this contract's.")]


async def _viewer(caller: CallerDep, escrowflow_actor: ActorHeader = None) -> Actor | None:
    """Whose rows the caller may list: None for all (`read` or `act:admin`)."""
    if "read" in caller.scopes or Role.ADMIN in caller.roles:
        return None
    if not escrowflow_actor:
        raise ValidationError(
            "name the party whose contracts to list in the Escrowflow-Actor header, e.g. "
            "client:acme (or use a token with the read scope)",
            code="actor_required",
        )
    actor = Actor.parse(escrowflow_actor)
    if not caller.may_act_as(actor.role) or actor.role not in (Role.CLIENT, Role.FREELANCER):
        raise PermissionDenied(
            f"service {caller.service} may not list as {actor.role.value}: its token needs "
            f"the scope act:{actor.role.value} or read",
            code="scope_missing",
        )
    return actor


Viewer = Annotated[Actor | None, Depends(_viewer)]


def router() -> APIRouter:
    router = api_router(prefix="/v1", tags=["lists"], responses=READ_ERRORS)

    @router.get(
        "/contracts",
        summary="Contracts, by id (filters: client_id, freelancer_id, state)",
        response_model=resources.PAGES["contract"],
    )
    async def list_contracts(
        engine: EngineDep,
        viewer: Viewer,
        client_id: Party = None,
        freelancer_id: Party = None,
        state: State = None,
        limit: Limit = lists.DEFAULT_LIMIT,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        filters = {"client_id": client_id, "freelancer_id": freelancer_id, "state": state}
        return await _page(engine.reads, "contract", filters, viewer, limit, cursor)

    @router.get(
        "/contracts/{entity_id}/milestones",
        summary="A contract's milestones, in contract order",
        response_model=resources.PAGES["milestone"],
    )
    async def list_milestones(
        entity_id: EntityId,
        engine: EngineDep,
        viewer: Viewer,
        limit: Limit = lists.DEFAULT_LIMIT,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        filters = {"contract_id": entity_id}
        # One contract's milestones read the primary: asked for right after an offer, a
        # lagging replica would not know the contract yet (404).
        return await _page(engine.db, "milestone", filters, viewer, limit, cursor)

    for collection, entity in (
        ("change_requests", "change_request"),
        ("proposals", "proposal"),
        ("refunds", "refund"),
    ):
        _add_state_list(router, collection, entity)

    @router.get(
        "/deadlines",
        summary="Pending deadlines, soonest first (filters: contract_id, due_before, event)",
        response_model=resources.DeadlinePage,
    )
    async def list_deadlines(
        engine: EngineDep,
        viewer: Viewer,
        contract_id: ContractId = None,
        due_before: Annotated[datetime | None, Query(description="ISO 8601, with offset.")] = None,
        event: Annotated[str | None, Query(max_length=40)] = None,
        limit: Limit = lists.DEFAULT_LIMIT,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        if due_before is not None and due_before.tzinfo is None:
            raise ValidationError(
                "due_before needs a UTC offset, e.g. 2026-12-01T00:00:00Z", code="naive_time"
            )
        found = await offload(
            partial(
                lists.deadline_page,
                engine.reads,
                contract_id=contract_id,
                due_before=due_before,
                event=event,
                viewer=viewer,
                limit=limit,
                cursor=cursor,
            )
        )
        return found

    return router


def _add_state_list(router: APIRouter, collection: str, entity: str) -> None:
    @router.get(
        f"/{collection}",
        summary=f"{collection.replace('_', ' ').capitalize()}, by id (filters: state, contract_id)",
        name=f"list_{collection}",
        response_model=resources.PAGES[entity],
    )
    async def listing(
        engine: EngineDep,
        viewer: Viewer,
        state: State = None,
        contract_id: ContractId = None,
        limit: Limit = lists.DEFAULT_LIMIT,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        filters = {"state": state, "contract_id": contract_id}
        return await _page(engine.reads, entity, filters, viewer, limit, cursor)


async def _page(
    db: DBEngine,
    entity: str,
    filters: dict[str, Any],
    viewer: Actor | None,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    chosen = {k: v for k, v in filters.items() if v is not None}
    found = await offload(partial(lists.entity_page, db, entity, chosen, viewer, limit, cursor))
    return found
