"""Routes for operators: liveness, readiness, metrics."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool as offload

from escrowflow import schemas
from escrowflow.api.deps import (
    EngineDep,
)
from storage.migrate import current

_log = logging.getLogger("escrowflow.api")


def router() -> APIRouter:
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
