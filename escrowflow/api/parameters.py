"""Query parameters an endpoint does not take are refused (422 `unknown_filter`) on every
endpoint of the API, not ignored: `/v1/events?afterr=5` must not quietly read from the
start. What an endpoint takes is read from its own declaration (its FastAPI route), so
the list is never written twice.

`ApiRoute` is the route class of every API router (`escrowflow.api.deps.api_router`): it
refuses unknown parameters before FastAPI solves the route's dependencies (a request
without a query string costs nothing), and turns a path away on its literal head and tail
before trying its regex, since the app tries its routes in order and most are not the one.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette._utils import get_route_path
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import Scope

from storage.errors import ValidationError


def _query_names(dependant: Dependant) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for inner in dependant.dependencies:
        names |= _query_names(inner)
    return names


def refuse_unknown(path: str, known: frozenset[str], request: Request) -> None:
    """Refuse the query parameters of `request` that are not in `known`, naming them and
    the ones the endpoint at `path` takes."""
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        takes = ", ".join(sorted(known)) if known else "no query parameters"
        raise ValidationError(
            f"unknown parameter {', '.join(unknown)[:200]}: {path} takes {takes}",
            code="unknown_filter",
            details={"parameters": unknown[:20]},
        )


class ApiRoute(APIRoute):
    """A route of the API: unknown query parameters refused, paths turned away cheaply."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **options: Any) -> None:
        super().__init__(path, endpoint, **options)
        self._head = path.split("{", 1)[0]
        self._tail = path.rsplit("}", 1)[1] if "}" in path else ""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http":
            path = get_route_path(scope)
            if not (path.startswith(self._head) and path.endswith(self._tail)):
                return Match.NONE, {}
        return super().matches(scope)

    def endpoint_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """What answers a request once its query is known good: FastAPI's, by default."""
        return super().get_route_handler()

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = self.endpoint_handler()
        path, known = self.path, frozenset(_query_names(self.dependant))

        async def checked(request: Request) -> Response:
            if request.scope.get("query_string"):
                refuse_unknown(path, known, request)
            return await handle(request)

        return checked
