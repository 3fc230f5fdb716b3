"""Routes that apply events: one per (collection, event), and the offer of a contract.

Each is an `EventRoute` (its parameters read by `escrowflow.api.event_route`, not by
FastAPI's solver), and each event ends in `Write.fire`."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response

from escrowflow import event_bodies, schemas
from escrowflow.api.deps import (
    ERRORS,
    Acting,
    ActorHeader,
    Collection,
    Credentials,
    EntityId,
    IdempotencyKey,
    IfMatch,
    acting_as,
    api_router,
    caller_of,
    entity_of,
    etag,
    expected_version,
    scoped_key,
)
from escrowflow.api.event_route import EventRoute
from escrowflow.api.write_turn import WriteTurn
from escrowflow.vocabulary import COLLECTIONS
from workflows.actors import Role
from workflows.engine import EscrowEngine, Result
from workflows.machines import MACHINES


def _answer(
    request: Request, response: Response, result: Result, *, created: bool = False
) -> schemas.TransitionOut:
    response.headers["ETag"] = etag(result["version"])
    if result.get("replayed"):
        response.headers["Idempotent-Replayed"] = "true"
    if created:
        response.status_code = 201
    if result.get("approval") is not None:  # PA4: it waits for a second admin
        response.status_code = 202
    request.app.state.metrics.transitions.labels(result["entity"], result["event"], "request").inc()
    return schemas.TransitionOut.model_validate(result)


class Write:
    """One mutating request: who acts, through which engine, with which retry headers."""

    def __init__(
        self,
        request: Request,
        response: Response,
        engine: EscrowEngine,
        acting: Acting,
        key: str | None,
        if_match: str | None,
    ) -> None:
        self.request, self.response, self.engine = request, response, engine
        self.acting, self.key, self.if_match = acting, key, if_match

    async def fire(
        self,
        entity: str,
        entity_id: int,
        event: str,
        payload: dict[str, Any],
        *,
        created: bool = False,
    ) -> schemas.TransitionOut:
        """Apply the event in its turn (`WriteTurn`) and answer it: every event route ends here."""
        turn: WriteTurn = self.request.app.state.write_turn
        result = await turn.run(
            self.engine,
            "apply",
            entity,
            entity_id,
            event,
            self.acting.actor,
            payload,
            idempotency_key=scoped_key(self.acting, self.key),
            expected_version=expected_version(self.if_match),
        )
        return _answer(self.request, self.response, result, created=created)

    async def offer(self, contract: dict[str, Any]) -> schemas.TransitionOut:
        """Offer a contract in its turn and answer it (201, with its Location)."""
        turn: WriteTurn = self.request.app.state.write_turn
        result = await turn.run(
            self.engine,
            "create_contract",
            self.acting.actor,
            contract,
            scoped_key(self.acting, self.key),
        )
        self.response.headers["Location"] = f"/v1/contracts/{result['id']}"
        return _answer(self.request, self.response, result, created=True)


async def _write(
    request: Request,
    response: Response,
    credentials: Credentials,
    escrowflow_actor: ActorHeader = None,
    idempotency_key: IdempotencyKey = None,
    if_match: IfMatch = None,
) -> Write:
    """The write a request asks for: every endpoint of this module starts here."""
    acting = acting_as(await caller_of(request, credentials), escrowflow_actor)
    engine: EscrowEngine = request.app.state.engine
    return Write(request, response, engine, acting, idempotency_key, if_match)


def router() -> APIRouter:
    router = api_router(prefix="/v1", tags=["transitions"], responses=ERRORS)

    async def create_contract(
        request: Request,
        response: Response,
        body: schemas.ContractCreate,
        credentials: Credentials,
        *,
        escrowflow_actor: ActorHeader = None,
        idempotency_key: IdempotencyKey = None,
    ) -> schemas.TransitionOut:
        write = await _write(request, response, credentials, escrowflow_actor, idempotency_key)
        return await write.offer(body.model_dump(exclude_unset=True))

    router.add_api_route(
        "/contracts",
        create_contract,
        methods=["POST"],
        status_code=201,
        summary="A client offers a contract (CT2)",
        route_class_override=EventRoute,
    )

    def event_route(
        path: str,
        entity: str,
        event: str,
        body_model: type[Any] | None,
        summary: str,
        *,
        name: str,
        method: str = "post",
        created: bool = False,
    ) -> None:
        router.add_api_route(
            path,
            _event_endpoint(entity, event, body_model, optional=False, created=created),
            methods=[method.upper()],
            status_code=201 if created else 200,
            summary=summary,
            name=name,
            route_class_override=EventRoute,
        )

    event_route(
        "/contracts/{entity_id}/milestones",
        "contract",
        "add_milestones",
        schemas.MilestonesCreate,
        "The client adds milestones, one or many (MS2)",
        created=True,
        name="add_milestones",
    )
    event_route(
        "/contracts/{entity_id}/milestones/order",
        "contract",
        "reorder_milestones",
        schemas.MilestoneOrder,
        "The client reorders the milestones not yet started (MS3)",
        method="put",
        name="reorder_milestones",
    )
    event_route(
        "/contracts/{entity_id}/proposals",
        "contract",
        "propose",
        schemas.ProposalCreate,
        "The freelancer proposes milestone changes (FP1)",
        created=True,
        name="propose_changes",
    )
    event_route(
        "/contracts/{entity_id}/refunds",
        "contract",
        "request_refund",
        schemas.RefundCreate,
        "The client requests a refund of held escrow (RF1)",
        created=True,
        name="request_refund",
    )
    event_route(
        "/milestones/{entity_id}",
        "milestone",
        "edit",
        schemas.MilestoneChange,
        "The client edits a milestone not yet started",
        method="patch",
        name="edit_milestone",
    )
    event_route(
        "/milestones/{entity_id}",
        "milestone",
        "delete",
        None,
        "The client deletes a milestone not yet started",
        method="delete",
        name="delete_milestone",
    )
    event_route(
        "/milestones/{entity_id}/change_requests",
        "milestone",
        "open_change_request",
        schemas.MilestoneChange,
        "The client asks to change the active milestone (CR1)",
        created=True,
        name="open_change_request",
    )

    for collection, entity in COLLECTIONS.items():
        for event in (e for (n, e) in event_bodies.party_events() if n == entity):
            _add_event_route(router, collection, entity, event)

    async def fire_other_event(
        request: Request,
        response: Response,
        collection: Collection,
        entity_id: EntityId,
        event: Annotated[str, Path(max_length=40)],
        credentials: Credentials,
        *,
        escrowflow_actor: ActorHeader = None,
        idempotency_key: IdempotencyKey = None,
        if_match: IfMatch = None,
        body: dict[str, Any] | None = None,
    ) -> schemas.TransitionOut:
        """An event no route above declares (the engine's own, or none): the engine
        answers why not, with its code."""
        write = await _write(
            request, response, credentials, escrowflow_actor, idempotency_key, if_match
        )
        return await write.fire(entity_of(collection), entity_id, event, body or {})

    router.add_api_route(
        "/{collection}/{entity_id}/events/{event}",
        fire_other_event,
        methods=["POST"],
        include_in_schema=False,
        route_class_override=EventRoute,
    )

    return router


def _add_event_route(router: APIRouter, collection: str, entity: str, event: str) -> None:
    """`POST /v1/COLLECTION/{entity_id}/events/EVENT`, with the event's own body model
    (optional where every field is) and operationId ENTITY_EVENT."""
    model = event_bodies.body_of(entity, event)
    optional = not any(field.is_required() for field in model.model_fields.values())
    roles = sorted(r.value for r in MACHINES[entity].permissions[event] if r is not Role.SYSTEM)

    router.add_api_route(
        f"/{collection}/{{entity_id}}/events/{event}",
        _event_endpoint(entity, event, model, optional=optional),
        methods=["POST"],
        summary=f"{entity.replace('_', ' ').capitalize()}: {event.replace('_', ' ')} "
        f"(by {', '.join(roles)})",
        name=f"{entity}_{event}",
        responses={202: {"model": schemas.TransitionOut, "description": _WAITS}},
        route_class_override=EventRoute,
    )


def _event_endpoint(
    entity: str, event: str, model: type[Any] | None, *, optional: bool, created: bool = False
) -> Callable[..., Awaitable[schemas.TransitionOut]]:
    """The endpoint of an event route (`EventRoute` reads its parameters): `model` is its
    body (None: it takes none), optional or required."""

    async def fire(
        request: Request,
        response: Response,
        entity_id: EntityId,
        credentials: Credentials,
        *,
        escrowflow_actor: ActorHeader = None,
        idempotency_key: IdempotencyKey = None,
        if_match: IfMatch = None,
        body: Any = None,
    ) -> schemas.TransitionOut:
        write = await _write(
            request, response, credentials, escrowflow_actor, idempotency_key, if_match
        )
        payload = {} if body is None else body.model_dump(exclude_unset=True)
        return await write.fire(entity, entity_id, event, payload, created=created)

    if model is None:  # the same endpoint, declared without a body (FastAPI reads this)
        declared = inspect.signature(fire)
        fire.__signature__ = declared.replace(  # type: ignore[attr-defined]
            parameters=[p for p in declared.parameters.values() if p.name != "body"]
        )
        return fire
    # Annotations are strings here (PEP 563); FastAPI reads the class from this.
    fire.__annotations__["body"] = (model | None) if optional else model
    if not optional and fire.__kwdefaults__ is not None:
        del fire.__kwdefaults__["body"]  # the body is required
    return fire


_WAITS = "PA4: it moves money above the threshold and waits for a second admin (`approval`)."
