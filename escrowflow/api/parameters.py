"""Query parameters an endpoint does not take are refused (422 `unknown_filter`) on every
endpoint of the API, not ignored: `/v1/events?afterr=5` must not quietly read from the
start. What an endpoint takes is read from its own declaration (its FastAPI route), so
the list is never written twice."""

from __future__ import annotations

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from storage.errors import ValidationError

_KNOWN: dict[int, frozenset[str]] = {}  # by route: its declared query parameters


def _query_names(dependant: Dependant) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for inner in dependant.dependencies:
        names |= _query_names(inner)
    return names


def _declared(route: APIRoute) -> frozenset[str]:
    known = _KNOWN.get(id(route))
    if known is None:
        known = _KNOWN[id(route)] = frozenset(_query_names(route.dependant))
    return known


async def refuse_unknown(request: Request) -> None:
    """A dependency for every API router: refuse query parameters the route does not
    declare, naming them and the ones it takes."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    known = _declared(route)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        takes = ", ".join(sorted(known)) if known else "no query parameters"
        raise ValidationError(
            f"unknown parameter {', '.join(unknown)[:200]}: {route.path} takes {takes}",
            code="unknown_filter",
            details={"parameters": unknown[:20]},
        )
