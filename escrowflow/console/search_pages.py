"""The console's front page: contracts found by what a person types (a party's id
prefix, title words, state, currency, the money held between two amounts, a timer due
within N days, a dispute, a held-back deadline), and the "needs attention" counts above,
each a link to its view. The criteria ride along on the next page's link."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool as offload

from escrowflow.console.access import engine_of, to_login, viewer_of
from escrowflow.console.rendering import render_page
from escrowflow.error_codes import http_status
from storage.errors import EscrowflowError
from workflows import search
from workflows.machines import MACHINES


def router() -> APIRouter:
    router = APIRouter(prefix="/console", include_in_schema=False)

    @router.get("/contracts")
    async def contracts(request: Request) -> Response:
        viewer = await viewer_of(request)
        if viewer is None:
            return to_login()
        params = request.query_params
        cursor = params.get("cursor") or None
        given = {k: v for k, v in params.items() if k != "cursor" and v.strip()}
        engine = engine_of(request)
        now = engine.clock.now()
        error, field, status = "", "", 200
        try:
            page: dict[str, Any] = await offload(
                search.contract_page, engine.reads, given, None, now, 50, cursor
            )
        except EscrowflowError as exc:
            page, error = {"items": [], "next_cursor": None}, exc.message
            field, status = str(exc.details.get("field", "")), http_status(exc)
        counts = await offload(search.attention, engine.reads, now)
        more = ""
        if page["next_cursor"]:
            more = "/console/contracts?" + urlencode({**given, "cursor": page["next_cursor"]})
        return render_page(
            request,
            "contracts.html",
            viewer,
            status=status,
            page=page,
            given=given,
            error=error,
            field=field,
            more=more,
            counts=counts,
            cap=search.COUNT_CAP,
            due_soon_days=search.DUE_SOON_DAYS,
            states=[s.id for s in MACHINES["contract"].states],
            currencies=sorted(engine.policy.currencies),
        )

    return router
