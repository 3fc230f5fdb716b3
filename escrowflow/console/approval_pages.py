"""The console's second approvals (PA4): on the disputes page, what waits for a second
admin, approved (it happens now, as this admin's) or rejected with a reason."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool as offload

from escrowflow.console.access import acting, admin_of, engine_of
from escrowflow.console.rendering import render_page
from escrowflow.error_codes import http_status
from storage.errors import EscrowflowError


def router() -> APIRouter:
    router = APIRouter(prefix="/console/approvals", include_in_schema=False)

    @router.post("/{approval_id}/{decision}")
    async def decide(request: Request, approval_id: int, decision: str) -> Response:
        viewer, form, refused = await acting(request)
        if refused is not None:
            return refused
        assert viewer is not None
        engine = engine_of(request)
        reason = str(form.get("reason") or "").strip()
        try:
            if decision == "approve":
                done = await offload(
                    engine.approve_decision, admin_of(viewer), approval_id, reason or None
                )
                notice = (
                    f"Approval {approval_id} approved: {done['entity']} {done['id']} is "
                    f"{done['state']}, {done['approval']['shown']} moved."
                )
            elif decision == "reject":
                await offload(engine.reject_decision, admin_of(viewer), approval_id, reason)
                notice = f"Approval {approval_id} rejected: nothing moved."
            else:
                return render_page(
                    request, "error.html", viewer, status=404, message="approve or reject"
                )
        except EscrowflowError as exc:
            return render_page(
                request, "error.html", viewer, status=http_status(exc), message=exc.message
            )
        return RedirectResponse(f"/console/disputes?{urlencode({'notice': notice})}", 303)

    return router
