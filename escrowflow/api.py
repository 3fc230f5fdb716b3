"""The HTTP API: other services trigger transitions and read state, history and events.

`create_app(settings)` builds it; nothing is created at import. Every request is
authenticated by a bearer token (escrowflow.tokens); a mutating request names the party
it acts for in `Escrowflow-Actor: ROLE:PARTY`, which the token's scopes must allow; the
engine then checks the role (PA1) and the membership (PA2). Errors are JSON
`{code, message, details}`, mapped once, here, from the engine's exception hierarchy.

Retries are safe: `Idempotency-Key` (per calling service, never expires) makes a repeat
answer the first result instead of acting twice; `If-Match` with an entity's `ETag`
refuses to act on a version the caller has not seen (412).
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool as offload
from starlette.exceptions import HTTPException as StarletteHTTPException

from escrowflow import diagrams, schemas, tokens
from escrowflow.daemon import build_worker
from escrowflow.error_codes import http_status
from escrowflow.limits import BodyLimit
from escrowflow.metrics import Metrics
from escrowflow.settings import Settings
from storage.errors import (
    EscrowflowError,
    MalformedRequest,
    NotFound,
    PermissionDenied,
    StorageError,
    ValidationError,
)
from storage.idempotency import MAX_KEY_LENGTH
from storage.migrate import current, head
from workflows import feed, views
from workflows.access import refuse_system_role
from workflows.actors import Actor, Role
from workflows.engine import Engine, Result

COLLECTIONS = {
    "contracts": "contract",
    "milestones": "milestone",
    "change_requests": "change_request",
    "proposals": "proposal",
    "refunds": "refund",
}
MAX_ID = 2**31 - 1
MAX_STORED_KEY = MAX_KEY_LENGTH  # the idempotency_keys column

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": schemas.ErrorOut, "description": text}
    for status, text in {
        400: "Malformed request (JSON, headers)",
        401: "No valid token",
        403: "The token's scopes or the acting party may not do this",
        404: "No such entity or event",
        409: "The rules do not allow this event now, or a concurrent change won",
        412: "If-Match names a version the entity has moved past",
        422: "Invalid input",
        503: "The database is unavailable",
    }.items()
}
READ_ERRORS: dict[int | str, dict[str, Any]] = {
    k: v for k, v in ERRORS.items() if k in (400, 401, 403, 404, 422, 503)
}

EntityId = Annotated[int, Path(ge=1, le=MAX_ID, description="The entity's id.")]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Makes a retry safe: the same key answers the first result. Never expires.",
        max_length=150,
    ),
]
IfMatch = Annotated[
    str | None,
    Header(alias="If-Match", description='The ETag you last saw, e.g. "v3".', max_length=40),
]
ActorHeader = Annotated[
    str | None,
    Header(
        alias="Escrowflow-Actor",
        description="The party acting, as ROLE:PARTY (e.g. client:acme).",
        max_length=140,
    ),
]
_bearer = HTTPBearer(auto_error=False, description="A token from `escrowflow tokens create`.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


# -- request context -------------------------------------------------------------------


# Handlers and dependencies are `async def` and hand the blocking database work to the
# threadpool themselves, once per request: FastAPI runs a plain `def` dependency, a plain
# `def` endpoint and then its response's serialisation in the threadpool, each a hop that
# cost more than the rest of a request's overhead (bench/http.py).


async def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


EngineDep = Annotated[Engine, Depends(_engine)]


async def _caller(request: Request, credentials: Credentials, engine: EngineDep) -> tokens.Caller:
    header = f"Bearer {credentials.credentials}" if credentials else None
    cache: tokens.TokenCache = request.app.state.token_cache
    known = cache.known(header)
    if known is not None:
        return known
    # A database read: off the event loop.
    return await offload(cache.authenticate, engine.db, header)


CallerDep = Annotated[tokens.Caller, Depends(_caller)]


class Acting:
    """The caller and the party it acts for, checked against its token's scopes."""

    def __init__(self, caller: tokens.Caller, actor: Actor) -> None:
        self.caller = caller
        self.actor = actor


async def _acting(caller: CallerDep, escrowflow_actor: ActorHeader = None) -> Acting:
    if not escrowflow_actor:
        raise ValidationError(
            "name the acting party in the Escrowflow-Actor header, e.g. client:acme",
            code="actor_required",
        )
    actor = Actor.parse(escrowflow_actor)
    refuse_system_role(actor)
    if not caller.may_act_as(actor.role):
        raise PermissionDenied(
            f"service {caller.service} may not act as {actor.role.value}: its token needs "
            f"the scope act:{actor.role.value}",
            code="scope_missing",
            details={"needed": f"act:{actor.role.value}", "scopes": sorted(caller.scopes)},
        )
    return Acting(caller, actor)


ActingDep = Annotated[Acting, Depends(_acting)]


async def _webhook_admin(caller: CallerDep) -> tokens.Caller:
    if "webhooks" not in caller.scopes:
        raise PermissionDenied(
            f"service {caller.service} may not manage webhooks: its token needs the scope webhooks",
            code="scope_missing",
            details={"needed": "webhooks", "scopes": sorted(caller.scopes)},
        )
    return caller


WebhookAdmin = Annotated[tokens.Caller, Depends(_webhook_admin)]


def _expected_version(if_match: str | None) -> int | None:
    if if_match is None or if_match.strip() == "*":
        return None
    found = re.fullmatch(r'\s*(?:W/)?"?v?(\d{1,9})"?\s*', if_match)
    if not found:
        raise MalformedRequest(
            f'If-Match {if_match!r} is not an ETag of this API, e.g. "v3"',
            code="invalid_if_match",
        )
    return int(found.group(1))


def _etag(version: int) -> str:
    return f'"v{version}"'


def _key(acting: Acting, key: str | None) -> str | None:
    """Keys are per calling service: two services cannot collide on one."""
    if key is None:
        return None
    if not key.strip() or not key.isprintable():
        raise MalformedRequest(
            "Idempotency-Key must be 1 to 150 printable characters",
            code="invalid_idempotency_key",
        )
    namespaced = f"{acting.caller.service}:{key}"
    if len(namespaced) <= MAX_STORED_KEY:
        return namespaced
    return "sha256:" + hashlib.sha256(namespaced.encode()).hexdigest()


# -- the app ---------------------------------------------------------------------------


def create_app(
    settings: Settings, *, engine: Engine | None = None, run_worker: bool = False
) -> FastAPI:
    """The API for `settings`; with `run_worker`, the daemon's worker runs inside it."""
    if engine is None:
        engine = settings.engine()
    metrics = Metrics(engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker = build_worker(settings, engine, metrics) if run_worker else None
        if worker is not None:
            worker.start()
        app.state.worker = worker
        try:
            yield
        finally:
            if worker is not None:
                worker.stop()  # the batch in hand finishes first

    app = FastAPI(
        title="escrowflow",
        version="1",
        summary="Escrow lifecycles of fixed-price contracts, applied exactly once.",
        description=__doc__,
        lifespan=lifespan,
    )
    app.state.engine = engine
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.head = head()
    app.state.token_cache = tokens.TokenCache(settings.api_token_cache_seconds)
    _install_error_handlers(app)
    # Outermost: before authentication and before any parsing.
    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)
    app.include_router(_writes())
    # Before the reads: /v1/webhooks/deliveries would otherwise match /v1/{collection}/{id}.
    app.include_router(_webhooks())
    app.include_router(_reads())
    app.include_router(_operations())
    app.add_middleware(_Timing, metrics=metrics)
    return app


# -- errors ----------------------------------------------------------------------------


_log = logging.getLogger("escrowflow.api")


def _error(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> Any:
    body = {"code": code, "message": message, "details": details or {}}
    return JSONResponse(body, status_code=status)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(EscrowflowError)
    async def domain_error(request: Request, exc: EscrowflowError) -> Any:
        headers = {"Retry-After": "1"} if isinstance(exc, StorageError) else None
        status = http_status(exc)
        response = _error(status, exc.code, exc.message, exc.details)
        if headers:
            response.headers.update(headers)
        if status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Any:
        errors = [
            {
                "field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"),
                "type": e.get("type", ""),
                "message": e.get("msg", ""),
            }
            for e in exc.errors()
        ]
        if any(e["type"] == "json_invalid" for e in errors):
            return _error(400, "malformed_json", "the request body is not valid JSON")
        first = errors[0] if errors else {"field": "", "message": "invalid request"}
        return _error(
            422,
            "invalid_request",
            f"{first['field'] or 'request'}: {first['message']}",
            {"errors": errors},
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Any:
        codes = {404: "not_found", 405: "method_not_allowed"}
        code = codes.get(exc.status_code, "http_error")
        message = (
            f"no such endpoint: {request.method} {request.url.path}"
            if exc.status_code in codes
            else str(exc.detail)
        )
        return _error(exc.status_code, code, message)


class _Timing:
    """Pure ASGI middleware: request durations by route template and status."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.request_seconds.labels(scope["method"], route, str(status)).observe(
                time.perf_counter() - started
            )


# -- writes ----------------------------------------------------------------------------


def _answer(
    request: Request, response: Response, result: Result, *, created: bool = False
) -> schemas.TransitionOut:
    response.headers["ETag"] = _etag(result["version"])
    if result.get("replayed"):
        response.headers["Idempotent-Replayed"] = "true"
    if created:
        response.status_code = 201
    request.app.state.metrics.transitions.labels(result["entity"], result["event"], "request").inc()
    return schemas.TransitionOut.model_validate(result)


class Write:
    """One mutating request: who acts, through which engine, with which retry headers."""

    def __init__(
        self,
        request: Request,
        response: Response,
        engine: Engine,
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
        """Apply the event in the threadpool and answer it: every event route ends here."""
        result = await offload(
            partial(
                self.engine.apply,
                idempotency_key=_key(self.acting, self.key),
                expected_version=_expected_version(self.if_match),
            ),
            entity,
            entity_id,
            event,
            self.acting.actor,
            payload,
        )
        return _answer(self.request, self.response, result, created=created)


async def _write(
    request: Request,
    response: Response,
    engine: EngineDep,
    acting: ActingDep,
    idempotency_key: IdempotencyKey = None,
    if_match: IfMatch = None,
) -> Write:
    return Write(request, response, engine, acting, idempotency_key, if_match)


WriteDep = Annotated[Write, Depends(_write)]


def _writes() -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["transitions"], responses=ERRORS)

    @router.post("/contracts", status_code=201, summary="A client offers a contract (CT2)")
    async def create_contract(
        body: schemas.ContractCreate,
        acting: ActingDep,
        engine: EngineDep,
        request: Request,
        response: Response,
        idempotency_key: IdempotencyKey = None,
    ) -> schemas.TransitionOut:
        result = await offload(
            engine.create_contract,
            acting.actor,
            body.model_dump(exclude_unset=True),
            _key(acting, idempotency_key),
        )
        response.headers["Location"] = f"/v1/contracts/{result['id']}"
        return _answer(request, response, result, created=True)

    def event_route(
        path: str,
        entity: str,
        event: str,
        body_model: type[Any] | None,
        summary: str,
        *,
        method: str = "post",
        created: bool = False,
    ) -> None:
        async def with_body(
            entity_id: EntityId, body: Any, write: WriteDep
        ) -> schemas.TransitionOut:
            payload = body.model_dump(exclude_unset=True)
            return await write.fire(entity, entity_id, event, payload, created=created)

        async def without_body(entity_id: EntityId, write: WriteDep) -> schemas.TransitionOut:
            return await write.fire(entity, entity_id, event, {}, created=created)

        handler: Callable[..., Awaitable[schemas.TransitionOut]] = without_body
        if body_model is not None:
            # Annotations are strings here (PEP 563); FastAPI reads the class from this.
            with_body.__annotations__["body"] = body_model
            handler = with_body
        router.add_api_route(
            path,
            handler,
            methods=[method.upper()],
            status_code=201 if created else 200,
            summary=summary,
            name=f"{entity}_{event}",
        )

    event_route(
        "/contracts/{entity_id}/milestones",
        "contract",
        "add_milestones",
        schemas.MilestonesCreate,
        "The client adds milestones, one or many (MS2)",
        created=True,
    )
    event_route(
        "/contracts/{entity_id}/milestones/order",
        "contract",
        "reorder_milestones",
        schemas.MilestoneOrder,
        "The client reorders the milestones not yet started (MS3)",
        method="put",
    )
    event_route(
        "/contracts/{entity_id}/proposals",
        "contract",
        "propose",
        schemas.ProposalCreate,
        "The freelancer proposes milestone changes (FP1)",
        created=True,
    )
    event_route(
        "/contracts/{entity_id}/refunds",
        "contract",
        "request_refund",
        schemas.RefundCreate,
        "The client requests a refund of held escrow (RF1)",
        created=True,
    )
    event_route(
        "/milestones/{entity_id}",
        "milestone",
        "edit",
        schemas.MilestoneChange,
        "The client edits a milestone not yet started",
        method="patch",
    )
    event_route(
        "/milestones/{entity_id}",
        "milestone",
        "delete",
        None,
        "The client deletes a milestone not yet started",
        method="delete",
    )
    event_route(
        "/milestones/{entity_id}/change_requests",
        "milestone",
        "open_change_request",
        schemas.MilestoneChange,
        "The client asks to change the active milestone (CR1)",
        created=True,
    )

    @router.post(
        "/{collection}/{entity_id}/events/{event}",
        summary="Fire any event on any entity",
        description="The uniform way to fire an event: the body is the event's payload "
        '(e.g. `{"amount": 20000}` for a partial release, `{"reason": "..."}`).',
    )
    async def fire_event(
        collection: Annotated[str, Path(description=", ".join(COLLECTIONS))],
        entity_id: EntityId,
        event: Annotated[str, Path(max_length=40, description="e.g. fund, submit, release")],
        write: WriteDep,
        body: Annotated[
            dict[str, Any] | None,
            _body_examples(),
        ] = None,
    ) -> schemas.TransitionOut:
        return await write.fire(_entity_of(collection), entity_id, event, body or {})

    return router


def _body_examples() -> Any:
    return Body(
        openapi_examples={
            "fund": {"summary": "fund, submit, accept...: no payload", "value": {}},
            "partial release": {"summary": "release part (MS9)", "value": {"amount": 20000}},
            "with a reason": {"summary": "any event may say why", "value": {"reason": "late"}},
            "resolve a dispute": {
                "summary": "refund resolve (RF3)",
                "value": {"to_client": 30000, "to_freelancer": 20000},
            },
        }
    )


def _entity_of(collection: str) -> str:
    try:
        return COLLECTIONS[collection]
    except KeyError:
        raise NotFound(
            f"unknown collection {collection!r}: use one of {', '.join(COLLECTIONS)}",
            code="unknown_entity",
        ) from None


# -- reads -----------------------------------------------------------------------------


def _reads() -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["reading"], responses=READ_ERRORS)

    @router.get("/events", summary="The event feed, in commit order")
    async def events(
        caller: CallerDep,
        engine: EngineDep,
        after: Annotated[int, Query(ge=0, le=2**62, description="The last position seen.")] = 0,
        limit: Annotated[int, Query(ge=1, le=feed.MAX_PAGE)] = 100,
        type: Annotated[
            list[str] | None,
            Query(description="ENTITY.EVENT patterns, e.g. milestone.*", max_length=100),
        ] = None,
    ) -> schemas.EventPage:
        found, cursor = await offload(
            partial(feed.read_events, after=after, limit=limit, types=type or ()),
            engine.db,
            engine.clock.now(),
        )
        return schemas.EventPage.model_validate({"events": found, "next_after": cursor})

    @router.get("/contracts/{entity_id}/ledger", summary="A contract's escrow ledger")
    async def ledger(
        entity_id: EntityId, caller: CallerDep, engine: EngineDep
    ) -> list[schemas.LedgerOut]:
        await offload(views.show, engine.db, "contract", entity_id)  # 404 if it is missing
        rows = await offload(views.ledger, engine.db, entity_id)
        return [schemas.LedgerOut.model_validate(r) for r in rows]

    @router.get(
        "/contracts/{entity_id}/next", summary="What happens next, and when, if nobody acts"
    )
    async def what_next(
        entity_id: EntityId, caller: CallerDep, engine: EngineDep
    ) -> list[schemas.NextOut]:
        rows = await offload(views.what_next, engine.db, entity_id)
        return [schemas.NextOut.model_validate(r) for r in rows]

    @router.get("/{collection}/{entity_id}", summary="An entity: state, version, what may happen")
    async def show(
        collection: Annotated[str, Path(description=", ".join(COLLECTIONS))],
        entity_id: EntityId,
        caller: CallerDep,
        engine: EngineDep,
        response: Response,
        escrowflow_actor: ActorHeader = None,
    ) -> schemas.EntityOut:
        entity = _entity_of(collection)
        view = await offload(views.show, engine.db, entity, entity_id)
        response.headers["ETag"] = _etag(view["version"])
        return schemas.EntityOut.model_validate(_entity_out(view, caller, escrowflow_actor))

    @router.get(
        "/{collection}/{entity_id}/diagram.svg",
        summary="Its lifecycle, current state highlighted, pending deadline dated",
        response_class=Response,
        responses={200: {"content": {"image/svg+xml": {}}}, 503: {"model": schemas.ErrorOut}},
    )
    async def diagram(
        collection: Annotated[str, Path(description=", ".join(COLLECTIONS))],
        entity_id: EntityId,
        caller: CallerDep,
        engine: EngineDep,
    ) -> Response:
        drawn = await offload(
            diagrams.instance, engine.db, engine.policy, _entity_of(collection), entity_id, "svg"
        )
        return Response(drawn, media_type="image/svg+xml")

    @router.get("/{collection}/{entity_id}/history", summary="Every transition, oldest first")
    async def history(
        collection: Annotated[str, Path(description=", ".join(COLLECTIONS))],
        entity_id: EntityId,
        caller: CallerDep,
        engine: EngineDep,
    ) -> list[schemas.HistoryOut]:
        rows = await offload(views.history, engine.db, _entity_of(collection), entity_id)
        return [schemas.HistoryOut.model_validate(r) for r in rows]

    return router


_VIEW_KEYS = {
    "entity",
    "id",
    "contract_id",
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


# -- webhooks --------------------------------------------------------------------------


def _webhooks() -> APIRouter:
    router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], responses=READ_ERRORS)

    @router.post("", status_code=201, summary="Subscribe a URL to events")
    async def subscribe(
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
    async def subscriptions(
        caller: WebhookAdmin, engine: EngineDep
    ) -> list[schemas.SubscriptionOut]:
        rows = await offload(feed.subscriptions, engine.db)
        return [schemas.SubscriptionOut.model_validate(s) for s in rows]

    @router.delete("/{subscription_id}", status_code=204, summary="Unsubscribe")
    async def unsubscribe(
        subscription_id: Annotated[int, Path(ge=1, le=MAX_ID)],
        caller: WebhookAdmin,
        engine: EngineDep,
    ) -> Response:
        await offload(feed.unsubscribe, engine.db, engine.clock.now(), subscription_id)
        return Response(status_code=204)

    @router.get("/deliveries", summary="Deliveries, e.g. the dead-lettered ones")
    async def deliveries(
        caller: WebhookAdmin,
        engine: EngineDep,
        status: Annotated[str | None, Query(pattern="^(pending|delivered|dead)$")] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: Annotated[str | None, Query(pattern="^[0-9]{1,10}$")] = None,
    ) -> schemas.DeliveryPage:
        after = int(cursor) if cursor else None
        rows = await offload(
            partial(feed.deliveries, status=status, after=after, limit=limit), engine.db
        )
        items = [schemas.DeliveryOut.model_validate(r) for r in rows]
        more = str(items[-1].id) if len(items) == limit else None
        return schemas.DeliveryPage(items=items, next_cursor=more)

    @router.post("/deliveries/{delivery_id}/replay", summary="Send a dead-lettered delivery again")
    async def replay(
        delivery_id: Annotated[int, Path(ge=1, le=MAX_ID)],
        caller: WebhookAdmin,
        engine: EngineDep,
    ) -> schemas.ReplayOut:
        count = await offload(
            partial(feed.replay, delivery_id=delivery_id), engine.db, engine.clock.now()
        )
        return schemas.ReplayOut(replayed=count)

    return router


# -- operations ------------------------------------------------------------------------


def _operations() -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="The process is up")
    async def healthz() -> schemas.Health:
        return schemas.Health(status="ok")

    @router.get(
        "/readyz",
        summary="The database is reachable and migrated",
        responses={503: {"model": schemas.Health}},
    )
    async def readyz(request: Request, engine: EngineDep) -> Any:
        try:
            revision = await offload(current, engine.db)
        except Exception as exc:  # any failure to reach the database means not ready
            # The driver's words go to the log, never to an unauthenticated caller.
            _log.warning(
                "readiness check failed",
                extra={"fields": {"event": "not_ready", "error": f"{type(exc).__name__}: {exc}"}},
            )
            detail = "the database cannot be reached or read: see the server's log"
            return JSONResponse({"status": "database_unavailable", "detail": detail}, 503)
        if revision != request.app.state.head:
            detail = (
                f"schema at {revision}, expected {request.app.state.head}: run escrowflow migrate"
            )
            return JSONResponse({"status": "not_migrated", "detail": detail}, 503)
        return schemas.Health(status="ready")

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}}},
    )
    def metrics(request: Request) -> Response:
        body = request.app.state.metrics.render()
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    return router
