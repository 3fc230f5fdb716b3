"""The API's documentation pages, served from this process: Swagger UI at /docs and
ReDoc at /redoc work without internet. Their scripts and styles come from the
`fastapi-offline` package (installed with escrowflow), mounted under /docs-assets; the
pages name no other host (no CDN, no web fonts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs-assets"
_FILES = Path(fastapi_offline.__file__).resolve().parent / "static"


def install(app: FastAPI) -> None:
    """Serve /docs, /redoc and their assets (create the app with docs_url=None and
    redoc_url=None)."""
    app.mount(ASSETS, StaticFiles(directory=_FILES), name="docs-assets")
    app.include_router(_router(app.title, app.openapi_url or "/openapi.json"))


def _router(title: str, openapi_url: str) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    page: dict[str, Any] = {"openapi_url": openapi_url, "title": f"{title}: the HTTP API"}

    @router.get("/docs")
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            **page,
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png",
        )

    @router.get("/redoc")
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            **page,
            with_google_fonts=False,
            redoc_js_url=f"{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS}/favicon.png",
        )

    return router
