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

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from escrowflow import request_ids, tokens
from escrowflow.api import (
    approvals,
    bulk,
    contract,
    docs,
    lists,
    notes,
    ops,
    reads,
    terms,
    webhooks,
    writes,
)
from escrowflow.api.deps import SafeJSONResponse, checked, operation_id
from escrowflow.api.write_turn import WriteTurn
from escrowflow.console import routes as console
from escrowflow.daemon import build_worker
from escrowflow.error_codes import http_status
from escrowflow.limits import BodyLimit
from escrowflow.metrics import Metrics
from escrowflow.settings import Settings
from escrowflow.write_process import WriteProcess
from storage.db import one_writer
from storage.errors import (
    EscrowflowError,
    StorageError,
)
from storage.migrate import head
from workflows.engine import EscrowEngine


def create_app(
    settings: Settings, *, engine: EscrowEngine | None = None, run_worker: bool = False
) -> FastAPI:
    """The API for `settings`; with `run_worker`, the daemon's worker runs inside it."""
    # Built here from the settings, the engine's writes for requests run in a process of
    # their own, which builds the same engine (escrowflow/write_process.py).
    process = None
    if engine is None:
        engine = settings.engine()
        if settings.api_write_process:
            process = WriteProcess(settings)
    metrics = Metrics(engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await app.state.write_turn.start()
        worker = build_worker(settings, engine, metrics) if run_worker else None
        if worker is not None:
            worker.start()
        app.state.worker = worker
        try:
            yield
        finally:
            if worker is not None:
                worker.stop()  # the batch in hand finishes first
            await app.state.write_turn.close()

    app = FastAPI(
        title="escrowflow",
        version="1",
        summary="Escrow lifecycles of fixed-price contracts, applied exactly once.",
        description=__doc__,
        lifespan=lifespan,
        default_response_class=SafeJSONResponse,
        generate_unique_id_function=operation_id,
        docs_url=None,  # served from this process, without a CDN: escrowflow/api/docs.py
        redoc_url=None,
    )
    docs.install(app)
    plain_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = contract.finish(plain_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.state.engine = engine
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.head = head()
    app.state.token_cache = tokens.TokenCache(settings.api_token_cache_seconds)
    app.state.write_turn = WriteTurn(one_writer(engine.db), settings.lock_timeout, process)
    _install_error_handlers(app)
    # Outermost: before authentication and before any parsing.
    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)
    for build in (
        writes.router,
        # Before the reads: /v1/webhooks/deliveries would otherwise match /v1/{collection}/{id}.
        webhooks.router,
        terms.router,
        bulk.router,
        approvals.router,
        notes.router,
        lists.router,
        reads.router,
        ops.router,
    ):
        # The API's routes go into the app's own table, in this order, rather than through
        # `include_router`: FastAPI (0.165) keeps an included router as a branch that it
        # scans twice per request (to match, then again to handle) with bookkeeping per
        # candidate; on a release that was a fifth of what HTTP added (bench/http.py).
        app.router.routes.extend(checked(build()).routes)
    console.install(app, settings)
    app.add_middleware(_Timing)
    return app


_log = logging.getLogger("escrowflow.api")


def _error(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> Any:
    body = {
        "code": code,
        "message": message,
        "details": details or {},
        "request_id": request_ids.CURRENT.get(),
    }
    return JSONResponse(body, status_code=status)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(EscrowflowError)
    async def domain_error(request: Request, exc: EscrowflowError) -> Any:
        headers = {"Retry-After": "1"} if isinstance(exc, StorageError) else None
        status = http_status(exc)
        if status >= 500:
            _log.warning(
                "request failed",
                extra={"fields": {"event": "request_failed", "code": exc.code, "status": status}},
            )
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
    """Pure ASGI middleware, outermost: the request's id (`escrowflow.request_ids`), and
    request durations by route template and status (in the app's `state.metrics`)."""

    def __init__(self, app: Any) -> None:
        self.app = app

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
        given = next((v for k, v in scope.get("headers", ()) if k == b"x-request-id"), None)
        request_id = request_ids.accept(given.decode("latin-1") if given else None)
        token = request_ids.CURRENT.set(request_id)

        async def sending(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            request_ids.CURRENT.reset(token)
            route = getattr(scope.get("route"), "path", "unmatched")
            metrics: Metrics = scope["app"].state.metrics
            metrics.request_seconds.labels(scope["method"], route, str(status)).observe(
                time.perf_counter() - started
            )
