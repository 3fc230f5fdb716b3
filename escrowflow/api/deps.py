"""What every route depends on: the engine, the caller (token), the acting party, the
retry headers, and the error responses the OpenAPI lists."""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool as offload

from escrowflow import schemas, tokens
from escrowflow.api.parameters import ApiRoute
from escrowflow.text import encodable
from escrowflow.vocabulary import COLLECTIONS
from storage.errors import (
    MalformedRequest,
    NotFound,
    PermissionDenied,
    ValidationError,
)
from storage.idempotency import MAX_KEY_LENGTH
from workflows.access import refuse_system_role
from workflows.actors import Actor
from workflows.engine import EscrowEngine

MAX_ID = 2**31 - 1
MAX_STORED_KEY = MAX_KEY_LENGTH  # the idempotency_keys column
CALLER_KEY_LENGTH = 150
"""The longest Idempotency-Key a caller sends (stored with its service's name before it:
past MAX_STORED_KEY the two are stored as their SHA-256)."""

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


class SafeJSONResponse(JSONResponse):
    """JSON, even for text stored before the boundary refused lone surrogates (they are
    sent as U+FFFD): no stored row can make a page answer 500."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return super().render(encodable(content))


def api_router(**options: Any) -> APIRouter:
    """A router of the API (not of the console): its routes refuse query parameters they
    do not declare (`escrowflow.api.parameters`)."""
    return APIRouter(
        route_class=ApiRoute,
        default_response_class=SafeJSONResponse,
        generate_unique_id_function=operation_id,
        **options,
    )


def operation_id(route: APIRoute) -> str:
    """A route's operationId: its function's name, which a generated client reads well
    (unique: tests/integration/test_parameters.py holds them to it)."""
    return route.name


def checked(router: APIRouter) -> APIRouter:
    """`router`, once sure it was made by `api_router`."""
    if router.route_class is not ApiRoute:
        raise TypeError(f"{router!r}: an API router is made with api_router()")
    return router


EntityId = Annotated[int, Path(ge=1, le=MAX_ID, description="The entity's id.")]
Collection = Annotated[
    str, Path(description="A collection of the API.", json_schema_extra={"enum": list(COLLECTIONS)})
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Makes a retry safe: the same key answers the first result. Never expires.",
        max_length=CALLER_KEY_LENGTH,
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


# Handlers and dependencies are `async def` and hand the blocking database work to the
# threadpool themselves, once per request: FastAPI runs a plain `def` dependency, a plain
# `def` endpoint and then its response's serialisation in the threadpool, each a hop that
# cost more than the rest of a request's overhead (bench/http.py).


async def _engine(request: Request) -> EscrowEngine:
    engine: EscrowEngine = request.app.state.engine
    return engine


EngineDep = Annotated[EscrowEngine, Depends(_engine)]


async def caller_of(
    request: Request, credentials: HTTPAuthorizationCredentials | None
) -> tokens.Caller:
    """The service whose token the request bears (401 without a valid one)."""
    header = f"Bearer {credentials.credentials}" if credentials else None
    cache: tokens.TokenCache = request.app.state.token_cache
    known = cache.known(header)
    if known is not None:
        return known
    # A database read: off the event loop.
    engine: EscrowEngine = request.app.state.engine
    return await offload(cache.authenticate, engine.db, header)


async def _caller(request: Request, credentials: Credentials) -> tokens.Caller:
    return await caller_of(request, credentials)


CallerDep = Annotated[tokens.Caller, Depends(_caller)]


class Acting:
    """The caller and the party it acts for, checked against its token's scopes."""

    def __init__(self, caller: tokens.Caller, actor: Actor) -> None:
        self.caller = caller
        self.actor = actor


def acting_as(caller: tokens.Caller, escrowflow_actor: str | None) -> Acting:
    """The party named by the Escrowflow-Actor header, if the caller's scopes allow it."""
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


async def _acting(caller: CallerDep, escrowflow_actor: ActorHeader = None) -> Acting:
    return acting_as(caller, escrowflow_actor)


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


def expected_version(if_match: str | None) -> int | None:
    if if_match is None or if_match.strip() == "*":
        return None
    found = re.fullmatch(r'\s*(?:W/)?"?v?(\d{1,9})"?\s*', if_match)
    if not found:
        raise MalformedRequest(
            f'If-Match {if_match!r} is not an ETag of this API, e.g. "v3"',
            code="invalid_if_match",
        )
    return int(found.group(1))


def etag(version: int) -> str:
    return f'"v{version}"'


def scoped_key(acting: Acting, key: str | None) -> str | None:
    """Keys are per calling service: two services cannot collide on one."""
    if key is None:
        return None
    if not key.strip() or not key.isprintable():
        raise MalformedRequest(
            f"Idempotency-Key must be 1 to {CALLER_KEY_LENGTH} printable characters",
            code="invalid_idempotency_key",
        )
    namespaced = f"{acting.caller.service}:{key}"
    if len(namespaced) <= MAX_STORED_KEY:
        return namespaced
    return "sha256:" + hashlib.sha256(namespaced.encode()).hexdigest()


def entity_of(collection: str) -> str:
    try:
        return COLLECTIONS[collection]
    except KeyError:
        raise NotFound(
            f"unknown collection {collection!r}: use one of {', '.join(COLLECTIONS)}",
            code="unknown_entity",
        ) from None
