"""Routes for operators: liveness, readiness, metrics."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool as offload

from escrowflow import resources, schemas
from escrowflow.api.deps import (
    EngineDep,
    api_router,
)
from storage.db import whereabouts
from storage.migrate import current, probe_write
from workflows.engine import EscrowEngine

_log = logging.getLogger("escrowflow.api")


READY_WITHIN_SECONDS = 1.0
"""/readyz answers within this, whatever the database does."""


def _probe(engine: EscrowEngine, head: str | None) -> tuple[str | None, timedelta, dict[str, Any]]:
    revision = current(engine.db)
    if revision == head:
        probe_write(engine.db)
    return revision, engine.clock_skew(), whereabouts(engine.db)


def router() -> APIRouter:
    router = api_router(tags=["operations"])

    @router.get("/healthz", summary="The process is up")
    async def healthz() -> schemas.Health:
        return schemas.Health(status="ok")

    @router.get(
        "/readyz",
        summary="The database is reachable and migrated",
        response_model=resources.Readiness,
        responses={503: {"model": resources.Readiness}},
    )
    async def readyz(request: Request, engine: EngineDep) -> Any:
        """Ready: the database answers within a second, is migrated, takes a write (a
        full disk or a read-only file is not ready), and this host's clock is within
        ESCROWFLOW_MAX_CLOCK_SKEW of the database's (DL2)."""
        max_skew = request.app.state.settings.max_clock_skew
        try:
            revision, skew, database = await asyncio.wait_for(
                offload(_probe, engine, request.app.state.head), READY_WITHIN_SECONDS
            )
        except Exception as exc:  # any failure to reach the database means not ready
            # The driver's words go to the log, never to an unauthenticated caller.
            _log.warning(
                "readiness check failed",
                extra={"fields": {"event": "not_ready", "error": f"{type(exc).__name__}: {exc}"}},
            )
            detail = (
                "the database cannot be reached, read or written within "
                f"{READY_WITHIN_SECONDS:g} s: see the server's log"
            )
            return JSONResponse({"status": "database_unavailable", "detail": detail}, 503)
        if revision != request.app.state.head:
            detail = (
                f"schema at {revision}, expected {request.app.state.head}: run escrowflow migrate"
            )
            return JSONResponse({"status": "not_migrated", "detail": detail}, 503)
        body: dict[str, Any] = {
            "status": "ready",
            "clock_skew_seconds": round(skew.total_seconds(), 3),
            "database": database,
        }
        if abs(skew) > max_skew:
            body["status"] = "clock_skew"
            body["detail"] = (
                f"this host's clock is {skew.total_seconds():+.1f} s off the database's "
                f"(at most {max_skew.total_seconds():g} s): fix its time (NTP)"
            )
            return JSONResponse(body, 503)
        return JSONResponse(body)

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
