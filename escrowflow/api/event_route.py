"""The routes that fire an event, most of the API's traffic, read their parameters
themselves: the same values and the same refusals as FastAPI's, at a fraction of its cost.

FastAPI (0.165) reads a request for any endpoint whatever: per request it extracts the
endpoint's context for its error messages, opens telemetry scopes, solves each dependency
through a cache and an exit stack, validates each parameter through its field, and then
validates the model the endpoint returned before serialising it. On a release over HTTP
that was a third of what the server spent beyond the transition itself (`bench/http.py`).

An event route declares its parameters as any route does (FastAPI reads them for the
OpenAPI document), and `EventRoute` checks when the route is made that they are only what
it knows how to read: path parameters, headers, one bearer-token dependency, an optional
JSON body, the request and the response. It reads them with the fields' own constraints
(their pydantic metadata) and refuses them with FastAPI's errors (`RequestValidationError`
with the same locations, a body that is not JSON first), before the endpoint runs.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from email.message import Message
from typing import Annotated, Any

from fastapi.datastructures import DefaultPlaceholder
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPBearer
from pydantic import BaseModel, TypeAdapter
from pydantic import ValidationError as PydanticValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from escrowflow.api.parameters import ApiRoute


@dataclass(frozen=True)
class _Parameter:
    """One path parameter or header the endpoint takes."""

    name: str  # the endpoint's
    where: str  # "path" or "header"
    alias: str
    adapter: TypeAdapter[Any]
    required: bool
    default: Any

    def read(self, request: Request, values: dict[str, Any], errors: list[Any]) -> None:
        given = (
            request.path_params.get(self.alias)
            if self.where == "path"
            else request.headers.get(self.alias)
        )
        if given is None:
            if self.required:
                errors.append(_missing((self.where, self.alias)))
            values[self.name] = self.default
            return
        try:
            values[self.name] = self.adapter.validate_python(given, from_attributes=True)
        except PydanticValidationError as exc:
            errors.extend(_located(exc, (self.where, self.alias)))


@dataclass(frozen=True)
class _Body:
    """The endpoint's JSON body."""

    name: str
    adapter: TypeAdapter[Any]
    required: bool

    async def read(self, request: Request, values: dict[str, Any], errors: list[Any]) -> None:
        raw = await request.body()
        if not raw:  # no body at all, unlike JSON null
            if self.required:
                errors.append(_missing(("body",)))
            values[self.name] = None
            return
        body = _json(request, raw)
        try:
            values[self.name] = self.adapter.validate_python(body, from_attributes=True)
        except PydanticValidationError as exc:
            errors.extend(_located(exc, ("body",)))


class _Reader:
    """What an event endpoint takes, read from a request: fails at definition on anything
    else it declares."""

    def __init__(self, dependant: Dependant, path: str) -> None:
        unreadable = [
            kind
            for kind, present in (
                ("query parameters", dependant.query_params),
                ("cookies", dependant.cookie_params),
                ("background tasks", dependant.background_tasks_param_name),
                ("security scopes", dependant.security_scopes_param_name),
                ("more than one body parameter", len(dependant.body_params) > 1),
            )
            if present
        ]
        bearers = [
            (d.name, d.call)
            for d in dependant.dependencies
            if isinstance(d.call, HTTPBearer) and d.name
            and not (d.dependencies or d.path_params or d.header_params)
        ]  # fmt: skip
        if len(bearers) != len(dependant.dependencies) or len(bearers) > 1:
            unreadable.append("dependencies other than one bearer token of no parameters")
        if unreadable:
            raise TypeError(f"event route {path}: EventRoute cannot read {', '.join(unreadable)}")
        self.parameters = [
            _parameter(where, field)
            for where, fields in (
                ("path", dependant.path_params),
                ("header", dependant.header_params),
            )
            for field in fields
        ]
        self.bearer = bearers[0] if bearers else None
        self.body = None
        if dependant.body_params:
            field = dependant.body_params[0]
            info = field.field_info
            self.body = _Body(field.name, TypeAdapter(info.annotation or Any), info.is_required())
        self.request_name = dependant.request_param_name
        self.response_name = dependant.response_param_name

    async def read(self, request: Request, response: Response) -> dict[str, Any]:
        """The endpoint's arguments; RequestValidationError with every refusal."""
        values: dict[str, Any] = {}
        errors: list[Any] = []
        for parameter in self.parameters:
            parameter.read(request, values, errors)
        if self.body is not None:
            await self.body.read(request, values, errors)
        if errors:
            raise RequestValidationError(errors)
        if self.bearer is not None:
            name, bearer = self.bearer
            values[name] = await bearer(request)
        if self.request_name:
            values[self.request_name] = request
        if self.response_name:
            values[self.response_name] = response
        return values


class EventRoute(ApiRoute):
    """An API route whose endpoint returns a model and takes only what `_Reader` reads."""

    def endpoint_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        reader = _Reader(self.dependant, self.path)
        call = self.dependant.call
        if call is None or not (
            isinstance(self.response_model, type) and issubclass(self.response_model, BaseModel)
        ):
            raise TypeError(f"event route {self.path}: its endpoint must return a model")
        status = self.status_code or 200
        answer: type[Response] = (
            self.response_class.value
            if isinstance(self.response_class, DefaultPlaceholder)
            else self.response_class
        )

        async def handle(request: Request) -> Response:
            sub = Response()  # what the endpoint sets: status, headers
            del sub.headers["content-length"]
            sub.status_code = None  # type: ignore[assignment]
            values = await reader.read(request, sub)
            out: BaseModel = await call(**values)
            response = answer(
                out.model_dump(mode="json", by_alias=True), status_code=sub.status_code or status
            )
            response.headers.raw.extend(sub.headers.raw)
            return response

        return handle


def _parameter(where: str, field: Any) -> _Parameter:
    info = field.field_info
    kind = info.annotation
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        kind = typing.Union[tuple(a for a in typing.get_args(kind) if a is not type(None))]  # noqa: UP007
    adapter: TypeAdapter[Any] = TypeAdapter(
        Annotated[(kind, *info.metadata)] if info.metadata else kind
    )
    required = info.is_required()
    return _Parameter(
        field.name, where, field.alias, adapter, required, None if required else info.default
    )


def _json(request: Request, raw: bytes) -> Any:
    """The body as FastAPI reads it: JSON when the content type says so (an error when it
    is not JSON), else the bytes themselves, which no model takes."""
    content_type = request.headers.get("content-type")
    if not content_type:
        return raw
    message = Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    if message.get_content_maintype() != "application" or not (
        subtype == "json" or subtype.endswith("+json")
    ):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": ("body", exc.pos),
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": exc.msg},
                }
            ]
        ) from exc
    except ValueError as exc:  # not UTF-8, UTF-16 or UTF-32
        raise HTTPException(status_code=400, detail="There was an error parsing the body") from exc


def _missing(loc: tuple[Any, ...]) -> dict[str, Any]:
    return {"type": "missing", "loc": loc, "msg": "Field required", "input": None}


def _located(exc: PydanticValidationError, where: tuple[Any, ...]) -> list[dict[str, Any]]:
    return [{**error, "loc": (*where, *error["loc"])} for error in exc.errors(include_url=False)]
