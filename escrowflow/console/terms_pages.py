"""The console's terms pages (TM1, TM2): every terms version and the contracts under
it, migration plans (made here, or by the API or the CLI), a plan's moves and money,
and its apply, which asks for a reason and for the plan's own figures to be confirmed."""

from __future__ import annotations

from typing import Any

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
from storage.errors import EscrowflowError, ValidationError
from workflows import terms, terms_migration


def _whole(value: Any, field: str) -> int | None:
    text = str(value or "").strip()
    if not text:
        return None
    if not text.isdigit():
        raise ValidationError(f"{field} is a whole number, not {text!r}", code="invalid_field")
    return int(text)


def router() -> APIRouter:
    router = APIRouter(prefix="/console/terms", include_in_schema=False)

    async def terms_page(
        request: Request, viewer: Viewer, status: int = 200, error: str = ""
    ) -> Response:
        db = engine_of(request).db
        versions = await offload(terms.listing, db)
        plans = await offload(terms_migration.listing, db)
        return render_page(
            request, "terms.html", viewer, status=status, error=error, versions=versions,
            plans=plans,
        )  # fmt: skip

    @router.get("")
    async def listing(request: Request) -> Response:
        viewer = await viewer_of(request)
        if viewer is None:
            return to_login()
        return await terms_page(request, viewer)

    @router.post("/plans")
    async def make_plan(request: Request) -> Response:
        viewer, form, refused = await acting(request)
        if refused is not None:
            return refused
        assert viewer is not None
        try:
            target = _whole(form.get("to_terms_id"), "the target terms")
            if target is None:
                raise ValidationError("choose the terms to move to", code="field_required")
            selection = {
                "terms_id": _whole(form.get("from_terms_id"), "the current terms"),
                "client_id": str(form.get("client_id") or "").strip() or None,
                "freelancer_id": str(form.get("freelancer_id") or "").strip() or None,
            }
            chosen = {k: v for k, v in selection.items() if v is not None}
            made = await offload(
                engine_of(request).plan_terms,
                admin_of(viewer),
                target,
                chosen,
            )
        except EscrowflowError as exc:
            return await terms_page(request, viewer, http_status(exc), exc.message)
        return RedirectResponse(f"/console/terms/plans/{made['id']}", status_code=303)

    async def plan_page(
        request: Request, viewer: Viewer, plan_id: int, status: int = 200, **notes: str
    ) -> Response:
        try:
            plan = await offload(terms_migration.show, engine_of(request).db, plan_id)
        except EscrowflowError as exc:
            return render_page(
                request, "error.html", viewer, status=http_status(exc), message=exc.message
            )
        return render_page(
            request, "plan.html", viewer, status=status, plan=plan,
            error=notes.get("error", ""), notice=notes.get("notice", ""),
        )  # fmt: skip

    @router.get("/plans/{plan_id}")
    async def show_plan(request: Request, plan_id: int, notice: str = "") -> Response:
        viewer = await viewer_of(request)
        if viewer is None:
            return to_login()
        return await plan_page(request, viewer, plan_id, notice=notice)

    @router.post("/plans/{plan_id}/apply")
    async def apply(request: Request, plan_id: int) -> Response:
        viewer, form, refused = await acting(request)
        if refused is not None:
            return refused
        assert viewer is not None
        try:
            require_confirmation(form, "the contracts and deadlines this plan moves")
            result = await offload(
                engine_of(request).apply_terms_plan,
                admin_of(viewer),
                plan_id,
                str(form.get("reason") or ""),
            )
        except EscrowflowError as exc:
            return await plan_page(request, viewer, plan_id, http_status(exc), error=exc.message)
        notice = f"plan+{plan_id}+applied:+{result['moved']}+contracts+moved"
        return RedirectResponse(f"/console/terms/plans/{plan_id}?notice={notice}", status_code=303)

    return router
