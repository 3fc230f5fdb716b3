"""Routes that read: entities, history, ledger, what happens next, the feed, diagrams."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool as offload

from escrowflow import diagrams, resources, schemas, tokens
from escrowflow.api.deps import (
    READ_ERRORS,
    ActorHeader,
    CallerDep,
    Collection,
    EngineDep,
    EntityId,
    api_router,
    entity_of,
    etag,
)
from escrowflow.api.lists import Cursor, Limit
from escrowflow.vocabulary import COLLECTIONS
from storage.errors import PermissionDenied
from workflows import dossier, feed, forecast, lists, views
from workflows.actors import Actor, Role

OCTETS = "application/octet-stream"
_FILE = {"schema": {"type": "string", "format": "binary"}}
SVG_CONTENT = {"image/svg+xml": _FILE, OCTETS: _FILE}


def router() -> APIRouter:
    router = api_router(prefix="/v1", tags=["reading"], responses=READ_ERRORS)

    @router.get("/events", summary="The event feed, in commit order")
    async def list_events(
        caller: CallerDep,
        engine: EngineDep,
        after: Annotated[int, Query(ge=0, le=2**62, description="The last position seen.")] = 0,
        limit: Annotated[int, Query(ge=1, le=feed.MAX_PAGE)] = 100,
        type: Annotated[
            list[str] | None,
            Query(description="ENTITY.EVENT patterns, e.g. milestone.*", max_length=100),
        ] = None,
        cursor: Annotated[
            str | None,
            Query(
                max_length=20, description="The `next_cursor` of the previous page (or `after`)."
            ),
        ] = None,
    ) -> schemas.EventPage:
        if cursor is not None:
            after = feed.position_of(cursor, after)
        found, position = await offload(
            partial(feed.read_events, after=after, limit=limit, types=type or ()),
            engine.db,
            engine.clock.now(),
        )
        return schemas.EventPage.model_validate({"items": found, "next_cursor": str(position)})

    @router.get("/contracts/{entity_id}/ledger", summary="A contract's escrow ledger")
    async def contract_ledger(
        entity_id: EntityId,
        caller: CallerDep,
        engine: EngineDep,
        limit: Limit = lists.DEFAULT_LIMIT,
        cursor: Cursor = None,
    ) -> schemas.LedgerPage:
        page = await offload(views.ledger_page, engine.db, entity_id, limit, cursor)
        return schemas.LedgerPage.model_validate(page)

    @router.get(
        "/contracts/{entity_id}/dossier",
        summary="A contract's dossier for arbitration and audits (JSON)",
        description="Terms, parties, totals, milestones and other entities, one timeline "
        "(history, ledger moves, deadlines), the ledger with its balance, every deadline.",
    )
    async def contract_dossier(
        entity_id: EntityId, caller: CallerDep, engine: EngineDep
    ) -> resources.DossierOut:
        found = await offload(dossier.dossier, engine.db, entity_id)
        return resources.DossierOut.model_validate(found)

    @router.get(
        "/contracts/{entity_id}/dossier.csv",
        summary="A contract's timeline for arbitration and audits (CSV)",
        response_class=Response,
        responses={200: {"content": {"text/csv": {}}}},
    )
    async def contract_dossier_csv(
        entity_id: EntityId, caller: CallerDep, engine: EngineDep
    ) -> Response:
        found = await offload(dossier.dossier, engine.db, entity_id)
        return Response(
            dossier.as_csv(found),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="contract-{entity_id}.csv"'},
        )

    @router.get(
        "/contracts/{entity_id}/next", summary="What happens next, and when, if nobody acts"
    )
    async def contract_next(
        entity_id: EntityId, caller: CallerDep, engine: EngineDep
    ) -> resources.NextPage:
        rows = await offload(views.what_next, engine.db, entity_id)
        return resources.NextPage.model_validate({"items": rows, "next_cursor": None})

    @router.get("/forecast", summary="Money that moves by itself in the next days if nobody acts")
    async def liability_forecast(
        caller: CallerDep,
        engine: EngineDep,
        days: Annotated[int, Query(ge=1, le=forecast.MAX_DAYS)] = forecast.DEFAULT_DAYS,
        client_id: Annotated[
            str | None, Query(max_length=100, description="Only this client's contracts.")
        ] = None,
        freelancer_id: Annotated[
            str | None, Query(max_length=100, description="Only this freelancer's contracts.")
        ] = None,
    ) -> resources.ForecastOut:
        """Per UTC day and currency: what auto-approvals release to freelancers (MS10) and
        default refunds return to clients (RF2), with counts and totals; paused deadlines
        apart. Needs a `read` or admin token: it spans every contract."""
        if "read" not in caller.scopes and Role.ADMIN not in caller.roles:
            raise PermissionDenied(
                f"service {caller.service} may not read the forecast: its token needs the "
                "scope read or act:admin",
                code="scope_missing",
            )
        parties = {
            key: value
            for key, value in (("client_id", client_id), ("freelancer_id", freelancer_id))
            if value is not None
        }
        found = await offload(forecast.forecast, engine.reads, engine.clock.now(), days, parties)
        return resources.ForecastOut.model_validate(found)

    for collection, entity in COLLECTIONS.items():
        _add_show(router, collection, entity)

    @router.get(
        "/{collection}/{entity_id}/diagram.svg",
        summary="Its lifecycle, current state highlighted, pending deadline dated",
        description="SVG (`image/svg+xml`); the same bytes as `application/octet-stream` "
        "for a client that asks for that (`Accept`), as generated clients read files.",
        response_class=Response,
        responses={200: {"content": SVG_CONTENT}, 503: {"model": schemas.ErrorOut}},
    )
    async def entity_diagram(
        request: Request,
        collection: Collection,
        entity_id: EntityId,
        caller: CallerDep,
        engine: EngineDep,
    ) -> Response:
        drawn = await offload(
            diagrams.instance, engine.db, engine.terms, entity_of(collection), entity_id, "svg"
        )
        accepted = request.headers.get("accept", "")
        bytes_asked = "application/octet-stream" in accepted and "image/svg+xml" not in accepted
        return Response(drawn, media_type=OCTETS if bytes_asked else "image/svg+xml")

    @router.get("/{collection}/{entity_id}/history", summary="Every transition, oldest first")
    async def entity_history(
        collection: Collection,
        entity_id: EntityId,
        caller: CallerDep,
        engine: EngineDep,
        limit: Limit = lists.DEFAULT_LIMIT,
        cursor: Cursor = None,
    ) -> schemas.HistoryPage:
        page = await offload(
            views.history_page, engine.db, entity_of(collection), entity_id, limit, cursor
        )
        return schemas.HistoryPage.model_validate(page)

    return router


def _add_show(router: APIRouter, collection: str, entity: str) -> None:
    """`GET /v1/{collection}/{id}`: the entity, its `fields` typed as its own."""

    @router.get(
        f"/{collection}/{{entity_id}}",
        summary=f"A {entity.replace('_', ' ')}: state, version, what may happen",
        name=f"show_{entity}",
        response_model=resources.SHOWN[entity],
    )
    async def show(
        entity_id: EntityId,
        caller: CallerDep,
        engine: EngineDep,
        response: Response,
        escrowflow_actor: ActorHeader = None,
    ) -> Any:
        view = await offload(views.show, engine.db, entity, entity_id)
        response.headers["ETag"] = etag(view["version"])
        return _entity_out(view, caller, escrowflow_actor)


_VIEW_KEYS = {
    "entity",
    "id",
    "contract_id",
    "terms_id",
    "state",
    "version",
    "allowed_events",
    "pending_deadlines",
    "contract_escrow",
    "parties",
}


def _entity_out(view: dict[str, Any], caller: tokens.Caller, actor_text: str | None) -> Any:
    entity = view["entity"]
    contract_id = view["id"] if entity == "contract" else view["contract_id"]
    roles = set(caller.roles)
    party: str | None = None
    if actor_text:
        actor = Actor.parse(actor_text)
        roles &= {actor.role}
        party = actor.party
    allowed: list[str] = []
    for role_name, events in view["allowed_events"].items():
        role = Role(role_name)
        if role not in roles or (party is not None and not _member(view, role, party)):
            continue
        allowed.extend(e for e in events if e not in allowed)
    return {
        "entity": entity,
        "id": view["id"],
        "contract_id": contract_id,
        "terms_id": view["terms_id"],
        "state": view["state"],
        "version": view["version"],
        "fields": {k: v for k, v in view.items() if k not in _VIEW_KEYS},
        "allowed_events": allowed,
        "pending_deadlines": view["pending_deadlines"],
        "escrow": view["contract_escrow"],
    }


def _member(view: dict[str, Any], role: Role, party: str) -> bool:
    parties: dict[str, str] = view["parties"]
    return role.value not in parties or parties[role.value] == party
