"""The console's incident freeze (DL4): a bulk pause or resume of the deadlines a form
selects, its preview (count, contracts, money per currency and day, a sample), its
apply with a reason and a confirmation (a job the workers carry out: the page follows
its progress), its results, and its undo."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool as offload

from escrowflow.console.access import (
    acting,
    admin_of,
    engine_of,
    require_confirmation,
    to_login,
    viewer_of,
)
from escrowflow.console.rendering import render_page
from escrowflow.console.sessions import Viewer
from escrowflow.error_codes import http_status
from storage.errors import EscrowflowError
from workflows import bulk


def router() -> APIRouter:
    router = APIRouter(prefix="/console/deadlines/bulk", include_in_schema=False)

    async def page(
        request: Request, viewer: Viewer, bulk_id: int, status: int = 200, error: str = ""
    ) -> Response:
        try:
            found = await offload(bulk.show, engine_of(request).db, bulk_id)
        except EscrowflowError as exc:
            return render_page(
                request, "error.html", viewer, status=http_status(exc), message=exc.message
            )
        return render_page(request, "bulk.html", viewer, status=status, b=found, error=error)

    @router.post("")
    async def preview(request: Request) -> Response:
        viewer, form, refused = await acting(request)
        if refused is not None:
            return refused
        assert viewer is not None
        selection = {
            key: value
            for key in ("client_id", "freelancer_id")
            if (value := str(form.get(key) or "").strip())
        }
        events = [str(e) for e in form.getlist("events")]
        if events:
            selection["events"] = events  # type: ignore[assignment]
        try:
            made = await offload(
                engine_of(request).preview_bulk,
                admin_of(viewer),
                str(form.get("action") or ""),
                selection,
            )
        except EscrowflowError as exc:
            return render_page(
                request, "error.html", viewer, status=http_status(exc), message=exc.message
            )
        return RedirectResponse(f"/console/deadlines/bulk/{made['id']}", status_code=303)

    @router.get("/{bulk_id}")
    async def show(request: Request, bulk_id: int) -> Response:
        viewer = await viewer_of(request)
        if viewer is None:
            return to_login()
        return await page(request, viewer, bulk_id)

    @router.post("/{bulk_id}/apply")
    async def apply(request: Request, bulk_id: int) -> Response:
        viewer, form, refused = await acting(request)
        if refused is not None:
            return refused
        assert viewer is not None
        try:
            require_confirmation(form, "the deadlines and money this action holds")
            await offload(
                engine_of(request).start_bulk,
                admin_of(viewer),
                bulk_id,
                str(form.get("reason") or ""),
            )
        except EscrowflowError as exc:
            return await page(request, viewer, bulk_id, http_status(exc), exc.message)
        return RedirectResponse(f"/console/deadlines/bulk/{bulk_id}", status_code=303)

    @router.post("/{bulk_id}/undo")
    async def undo(request: Request, bulk_id: int) -> Response:
        viewer, _form, refused = await acting(request)
        if refused is not None:
            return refused
        assert viewer is not None
        try:
            made = await offload(engine_of(request).undo_bulk, admin_of(viewer), bulk_id)
        except EscrowflowError as exc:
            return await page(request, viewer, bulk_id, http_status(exc), exc.message)
        return RedirectResponse(f"/console/deadlines/bulk/{made['id']}", status_code=303)

    return router
