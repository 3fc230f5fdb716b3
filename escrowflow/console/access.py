"""Who is at the console: the signed-in viewer behind a request, and the admin behind
a form (CSRF-checked, act:admin); shared by every page module."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool as offload

from escrowflow import tokens
from escrowflow.console.rendering import render_page
from escrowflow.console.sessions import COOKIE, Sessions, Viewer, same_csrf
from storage.errors import Unauthenticated, ValidationError
from workflows.actors import Actor, Role
from workflows.engine import EscrowEngine


def now() -> datetime:
    return datetime.now(UTC)  # sessions last in real time, whatever the engine's clock


async def viewer_of(request: Request) -> Viewer | None:
    sessions: Sessions = request.app.state.console_sessions
    session_id = request.cookies.get(COOKIE)
    session = sessions.find(session_id, now())
    if session is None or session_id is None:
        return None
    cache: tokens.TokenCache = request.app.state.token_cache
    try:
        caller = await offload(cache.authenticate, engine_of(request).db, f"Bearer {session.token}")
    except Unauthenticated:  # revoked since: the session ends with it
        sessions.end(session_id)
        return None
    return Viewer(session_id, session, caller)


def engine_of(request: Request) -> EscrowEngine:
    engine: EscrowEngine = request.app.state.engine
    return engine


def to_login(message: str = "") -> RedirectResponse:
    target = "/console/login" + ("?expired=1" if message else "")
    return RedirectResponse(target, status_code=303)


async def acting(request: Request) -> tuple[Viewer | None, Any, Response | None]:
    """The signed-in admin behind a form, or the answer that refuses it."""
    viewer = await viewer_of(request)
    if viewer is None:
        return None, {}, to_login("expired")
    form = await request.form()
    if not same_csrf(viewer.session, str(form.get("csrf") or "")):
        message = "This form has expired or did not come from this console: reload the page."
        return viewer, form, render_page(request, "error.html", viewer, status=403, message=message)
    if not viewer.can_act:
        message = f"Token of {viewer.caller.service} may only read: acting needs act:admin."
        return viewer, form, render_page(request, "error.html", viewer, status=403, message=message)
    return viewer, form, None


def require_confirmation(form: Any, what: str) -> None:
    """A form that moves much at once carries its confirmation box, ticked."""
    if form.get("confirm") != "yes":
        raise ValidationError(f"tick the box to confirm {what}", code="confirmation_required")


def admin_of(viewer: Viewer) -> Actor:
    """The dispute team member acting through the console: the token's service."""
    return Actor(Role.ADMIN, viewer.caller.service)
