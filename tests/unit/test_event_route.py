"""`EventRoute` reads an event endpoint's parameters itself: for every request, good or
hostile, it must answer exactly what FastAPI's own handler answers for the same endpoint.

One endpoint, declared as the API's event endpoints are, is served twice in one app: once
by FastAPI's handler (`ApiRoute`) and once by `EventRoute`. Each request goes to both, and
the two answers (status, body with every validation error's location, type and message,
the headers the endpoint set) must be equal.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from escrowflow.api.deps import ActorHeader, Credentials, EntityId, IdempotencyKey, IfMatch
from escrowflow.api.event_route import EventRoute
from escrowflow.api.parameters import ApiRoute
from tests.live import serving


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(max_length=10)
    amount: int | None = Field(default=None, ge=1)


class Echo(BaseModel):
    entity_id: int
    token: str | None
    actor: str | None
    key: str | None
    if_match: str | None
    body: dict[str, Any] | None


async def fire(
    request: Request,
    response: Response,
    entity_id: EntityId,
    credentials: Credentials,
    *,
    escrowflow_actor: ActorHeader = None,
    idempotency_key: IdempotencyKey = None,
    if_match: IfMatch = None,
    body: Body | None = None,
) -> Echo:
    response.headers["ETag"] = '"v1"'
    if body is not None and body.amount == 202:
        response.status_code = 202
    return Echo(
        entity_id=entity_id,
        token=credentials.credentials if credentials else None,
        actor=escrowflow_actor,
        key=idempotency_key,
        if_match=if_match,
        body=None if body is None else body.model_dump(exclude_unset=True),
    )


async def fire_required(
    entity_id: EntityId, credentials: Credentials, body: Body, response: Response
) -> Echo:
    return await fire(Request({"type": "http"}), response, entity_id, credentials, body=body)


def _app() -> FastAPI:
    app = FastAPI()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [[list(e["loc"]), e["type"], e["msg"]] for e in exc.errors()]
        return JSONResponse({"errors": errors}, status_code=422)

    for name, route_class in (("fastapi", ApiRoute), ("ours", EventRoute)):
        app.router.add_api_route(
            f"/{name}/{{entity_id}}/optional",
            fire,
            methods=["POST"],
            route_class_override=route_class,
        )
        app.router.add_api_route(
            f"/{name}/{{entity_id}}/required",
            fire_required,
            methods=["POST"],
            route_class_override=route_class,
            status_code=201,
        )
    return app


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    """Both handlers, served over real HTTP on 127.0.0.1."""
    with serving(_app()) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


GOOD = {"Authorization": "Bearer t0k", "Escrowflow-Actor": "client:acme"}
JSON = {"Content-Type": "application/json"}

REQUESTS: list[tuple[str, str, dict[str, str], bytes | None]] = [
    ("a good request", "5", {**GOOD, **JSON}, b'{"reason": "late"}'),
    ("no body where it may be left out", "5", GOOD, None),
    ("every header", "7", {**GOOD, "Idempotency-Key": "k1", "If-Match": '"v3"'}, None),
    ("a body asking 202", "5", {**GOOD, **JSON}, b'{"reason": "x", "amount": 202}'),
    ("JSON null", "5", {**GOOD, **JSON}, b"null"),
    ("an id that is not a number", "abc", GOOD, None),
    ("id zero", "0", GOOD, None),
    ("an id past the column", "99999999999", GOOD, None),
    ("a long Idempotency-Key", "5", {**GOOD, "Idempotency-Key": "k" * 151}, None),
    ("a long If-Match", "5", {**GOOD, "If-Match": "v" * 41}, None),
    ("a long actor", "5", {**GOOD, "Escrowflow-Actor": "a" * 141}, None),
    ("no token", "5", {"Escrowflow-Actor": "client:acme"}, None),
    ("another scheme", "5", {"Authorization": "Basic eA=="}, None),
    ("a body that is not JSON", "5", {**GOOD, **JSON}, b'{"reason": '),
    ("a body in no Unicode", "5", {**GOOD, **JSON}, b'{"reason": "\xff\xfe"}'),
    ("a JSON body named as text", "5", {**GOOD, "Content-Type": "text/plain"}, b'{"reason": "x"}'),
    ("a body of no content type", "5", GOOD, b'{"reason": "x"}'),
    (
        "a +json content type",
        "5",
        {**GOOD, "Content-Type": "application/x+json"},
        b'{"reason":"x"}',
    ),
    ("a list", "5", {**GOOD, **JSON}, b"[1, 2]"),
    ("a field too long", "5", {**GOOD, **JSON}, b'{"reason": "far too long a reason"}'),
    ("a field unknown", "5", {**GOOD, **JSON}, b'{"reason": "x", "colour": "red"}'),
    ("a wrong type and a bad id", "x", {**GOOD, **JSON}, b'{"reason": 5, "amount": 0}'),
    ("everything wrong", "0", {**JSON, "If-Match": "v" * 41}, b'{"amount": "many"}'),
]


@pytest.mark.parametrize(
    ("what", "entity_id", "headers", "body"), REQUESTS, ids=[r[0] for r in REQUESTS]
)
@pytest.mark.parametrize("shape", ["optional", "required"])
def test_an_event_route_answers_as_fastapi_does(
    what: str,
    entity_id: str,
    headers: dict[str, str],
    body: bytes | None,
    shape: str,
    client: httpx.Client,
) -> None:
    expected, ours = [
        client.post(f"/{side}/{entity_id}/{shape}", headers=headers, content=body)
        for side in ("fastapi", "ours")
    ]
    assert ours.status_code == expected.status_code, (what, ours.text, expected.text)
    assert ours.json() == expected.json(), what
    assert ours.headers.get("etag") == expected.headers.get("etag")


def test_the_requests_above_reach_the_endpoint_and_its_refusals(client: httpx.Client) -> None:
    """The differential test above is only as good as its requests: they must cover a
    success, a status the endpoint sets, and refusals from the path, the headers and the
    body, and the body's parser."""
    answers = [
        client.post(f"/fastapi/{i}/optional", headers=h, content=b) for _, i, h, b in REQUESTS
    ]
    statuses = {answer.status_code for answer in answers}
    located = {loc[0] for answer in answers for loc, _, _ in answer.json().get("errors", [])}
    assert {200, 202, 400, 422} <= statuses
    assert {"path", "header", "body"} <= located


def test_an_event_route_refuses_at_definition_what_it_cannot_read() -> None:
    async def with_query(entity_id: EntityId, after: Annotated[int, Query()] = 0) -> Echo:
        raise AssertionError("never called")

    app = FastAPI()
    with pytest.raises(TypeError, match="cannot read query parameters"):
        app.router.add_api_route(
            "/x/{entity_id}", with_query, methods=["POST"], route_class_override=EventRoute
        )
