"""The operator console's pages under /console: sign-in, contracts, the contract
inspector, deadlines, disputes, webhooks and workers. Server-rendered (Jinja2, every
value escaped), plain forms with a CSRF token, our own small script for countdowns; the
pages name no other host (`Content-Security-Policy: default-src 'self'`).

`read` and `act:admin` tokens may sign in and see everything; the forms that act
(pause, resume, extend a deadline, resolve a dispute, replay a dead letter) need
`act:admin` and go through the same engine calls as the API.
"""

from __future__ import annotations

import contextlib
import secrets
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pydantic
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool as offload

from escrowflow import diagrams, tokens
from escrowflow.console import approval_pages, bulk_pages, search_pages, terms_pages
from escrowflow.console.access import acting as _acting
from escrowflow.console.access import admin_of, require_confirmation
from escrowflow.console.access import engine_of as _engine
from escrowflow.console.access import now as _now
from escrowflow.console.access import to_login as _to_login
from escrowflow.console.access import viewer_of as _viewer
from escrowflow.console.rendering import HEADERS, HERE, render_page
from escrowflow.console.sessions import COOKIE, Sessions, Viewer, same_csrf
from escrowflow.error_codes import http_status
from escrowflow.settings import Settings
from scheduler.worker import worker_status
from storage import deadlines
from storage.db import translated_errors
from storage.deliveries import DeliveryFilter
from storage.errors import EscrowflowError, NotFound, Unauthenticated, ValidationError
from workflows import deadline_admin, dossier, feed, forecast, inspector, lists
from workflows import disputes as dispute_desk
from workflows.actors import Actor, Role
from workflows.engine import EscrowEngine
from workflows.policy import format_money, parse_money

_DURATION = pydantic.TypeAdapter(timedelta)
ENTITIES = ("contract", "milestone", "change_request", "proposal", "refund")


def install(app: FastAPI, settings: Settings) -> None:
    app.state.console_sessions = Sessions(timedelta(seconds=settings.console_session_seconds))
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")
    app.include_router(search_pages.router())
    app.include_router(_router())
    app.include_router(terms_pages.router())
    app.include_router(bulk_pages.router())
    app.include_router(approval_pages.router())


LOGIN_COOKIE = "escrowflow_console_login"


def _login_page(request: Request, message: str, status: int = 200) -> Response:
    """The sign-in form with a fresh CSRF token, also set as a SameSite=Strict cookie."""
    csrf = secrets.token_urlsafe(32)
    response = render_page(
        request, "login.html", None, status=status, message=message, login_csrf=csrf
    )
    response.set_cookie(
        LOGIN_COOKIE,
        csrf,
        max_age=3600,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/console/login",
    )
    return response


def _router() -> APIRouter:
    router = APIRouter(prefix="/console", include_in_schema=False)

    @router.get("")
    async def home() -> Response:
        return RedirectResponse("/console/contracts", status_code=303)

    @router.get("/login")
    async def login_form(request: Request, expired: int = 0) -> Response:
        message = "Your session ended: sign in again." if expired else ""
        return _login_page(request, message)

    @router.post("/login")
    async def login(request: Request) -> Response:
        form = await request.form()
        # Login CSRF: the form's token must match the SameSite=Strict cookie set with
        # the form, which a cross-site page's submission does not carry.
        given = str(form.get("csrf") or "")
        expected = request.cookies.get(LOGIN_COOKIE, "")
        if not expected or not secrets.compare_digest(given.encode(), expected.encode()):
            message = "The sign-in form expired or did not come from this console: try again."
            return _login_page(request, message, status=403)
        token = str(form.get("token") or "").strip()
        cache: tokens.TokenCache = request.app.state.token_cache
        try:
            caller = await offload(cache.authenticate, _engine(request).db, f"Bearer {token}")
        except Unauthenticated:
            message = (
                "That token is not valid (mistyped or revoked): paste a token from "
                "`escrowflow tokens create`."
            )
            return _login_page(request, message, status=401)
        if "read" not in caller.scopes and Role.ADMIN not in caller.roles:
            message = (
                f"Token of {caller.service} cannot use the console: it needs the scope read "
                "or act:admin."
            )
            return _login_page(request, message, status=403)
        sessions: Sessions = request.app.state.console_sessions
        session_id = sessions.start(token, _now())
        response = RedirectResponse("/console/contracts", status_code=303)
        response.set_cookie(
            COOKIE,
            session_id,
            max_age=int(sessions.lifetime.total_seconds()),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/console",
        )
        response.delete_cookie(LOGIN_COOKIE, path="/console/login")
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        viewer = await _viewer(request)
        form = await request.form()
        if viewer is not None and same_csrf(viewer.session, str(form.get("csrf") or "")):
            request.app.state.console_sessions.end(viewer.session_id)
        response = RedirectResponse("/console/login", status_code=303)
        response.delete_cookie(COOKIE, path="/console")
        return response

    @router.get("/contracts/{contract_id}")
    async def inspect(request: Request, contract_id: int) -> Response:
        viewer = await _viewer(request)
        if viewer is None:
            return _to_login()
        try:
            found = await offload(inspector.contract_page, _engine(request).db, contract_id)
        except NotFound as exc:
            status = http_status(exc)
            return render_page(request, "error.html", viewer, status=status, message=exc.message)
        return render_page(request, "contract.html", viewer, **found)

    @router.post("/contracts/{contract_id}/notes")
    async def add_note(request: Request, contract_id: int) -> Response:
        """An admin's note, kept in the contract's history (the case's timeline)."""
        viewer, form, refused = await _acting(request)
        if refused is not None:
            return refused
        assert viewer is not None
        engine = _engine(request)
        try:
            await offload(
                engine.add_note, admin_of(viewer), contract_id, str(form.get("text") or "")
            )
        except EscrowflowError as exc:
            status = http_status(exc)
            return render_page(request, "error.html", viewer, status=status, message=exc.message)
        return RedirectResponse(f"/console/contracts/{contract_id}#history", status_code=303)

    @router.get("/contracts/{contract_id}/dossier.{kind}")
    async def contract_dossier(request: Request, contract_id: int, kind: str) -> Response:
        """The contract's dossier as a download: JSON (everything) or CSV (the timeline)."""
        viewer = await _viewer(request)
        if viewer is None:
            return _to_login()
        if kind not in ("json", "csv"):
            return render_page(request, "error.html", viewer, status=404, message="json or csv")
        try:
            found = await offload(dossier.dossier, _engine(request).db, contract_id)
        except NotFound as exc:
            status = http_status(exc)
            return render_page(request, "error.html", viewer, status=status, message=exc.message)
        text = dossier.as_json(found) if kind == "json" else dossier.as_csv(found)
        media = "application/json" if kind == "json" else "text/csv; charset=utf-8"
        disposition = f'attachment; filename="contract-{contract_id}.{kind}"'
        return Response(
            text, media_type=media, headers={**HEADERS, "Content-Disposition": disposition}
        )

    @router.get("/diagram/{entity}/{entity_id}.svg")
    async def diagram(request: Request, entity: str, entity_id: int) -> Response:
        viewer = await _viewer(request)
        if viewer is None or entity not in ENTITIES:
            return Response(status_code=404)
        engine = _engine(request)
        try:
            drawn = await offload(
                diagrams.instance, engine.db, engine.terms, entity, entity_id, "svg"
            )
        except EscrowflowError:
            return Response(status_code=404)
        return Response(drawn, media_type="image/svg+xml", headers=HEADERS)

    @router.get("/deadlines")
    async def deadlines_page(request: Request, notice: str = "") -> Response:
        viewer = await _viewer(request)
        if viewer is None:
            return _to_login()
        engine = _engine(request)
        now = engine.clock.now()
        board = await offload(_deadline_board, engine, now)
        return render_page(request, "deadlines.html", viewer, notice=notice, error="", **board)

    @router.post("/deadlines/{deadline_id}/{action}")
    async def adjust(request: Request, deadline_id: int, action: str) -> Response:
        viewer, form, refused = await _acting(request)
        if refused is not None:
            return refused
        assert viewer is not None
        by = str(form.get("by") or "").strip()
        try:
            extend_by = _duration(by) if action == "extend" else None
            await offload(
                _engine(request).adjust_deadline,
                deadline_id,
                action,
                Actor(Role.ADMIN, viewer.caller.service),
                str(form.get("reason") or ""),
                extend_by,
            )
        except EscrowflowError as exc:
            return await _with_error(request, viewer, "deadlines", exc)
        return RedirectResponse(
            f"/console/deadlines?notice=deadline+{deadline_id}+{deadline_admin.ACTIONS[action]}",
            status_code=303,
        )

    @router.get("/disputes")
    async def disputes(request: Request, notice: str = "") -> Response:
        viewer = await _viewer(request)
        if viewer is None:
            return _to_login()
        found = await offload(_disputes, _engine(request), viewer)
        return render_page(
            request, "disputes.html", viewer, error="", notice=notice, typed={}, **found
        )

    @router.post("/refunds/{refund_id}/resolve")
    async def resolve(request: Request, refund_id: int) -> Response:
        """RF3 from the desk: amounts typed as people write them (600.00), a reason, a
        confirmation; refused, the page again with what was typed; done, what moved."""
        viewer, form, refused = await _acting(request)
        if refused is not None:
            return refused
        assert viewer is not None
        engine = _engine(request)
        typed = {k: str(form.get(k) or "") for k in ("to_client", "to_freelancer", "reason")}
        try:
            currency = await offload(dispute_desk.currency_of_refund, engine.db, refund_id)
            split = {
                side: parse_money(typed[side] or "0", currency, f"to the {who}")
                for side, who in (("to_client", "client"), ("to_freelancer", "freelancer"))
            }
            reason = deadline_admin.checked_reason(typed["reason"])
            require_confirmation(form, "this resolution")
            done = await offload(
                engine.apply, "refund", refund_id, "resolve", admin_of(viewer),
                {**split, "reason": reason},
            )  # fmt: skip
        except EscrowflowError as exc:
            return await _with_error(request, viewer, "disputes", exc, typed={refund_id: typed})
        approval = done.get("approval")
        notice = (
            f"Refund {refund_id} resolved: {format_money(split['to_client'], currency)} to "
            f"the client, {format_money(split['to_freelancer'], currency)} to the freelancer."
            if approval is None  # PA4: above the threshold it waits for a second admin
            else f"The resolution of refund {refund_id} moves {approval['shown']}: it waits "
            f"for a second admin (approval {approval['id']})."
        )
        return RedirectResponse(f"/console/disputes?{urlencode({'notice': notice})}", 303)

    @router.get("/webhooks")
    async def webhooks(request: Request, status: str = "dead", notice: str = "") -> Response:
        viewer = await _viewer(request)
        if viewer is None:
            return _to_login()
        db = _engine(request).db
        subscriptions = await offload(feed.subscriptions, db)
        chosen = status if status in ("pending", "delivered", "dead") else "dead"
        deliveries = await offload(feed.deliveries, db, DeliveryFilter(status=chosen, limit=200))
        return render_page(
            request,
            "webhooks.html",
            viewer,
            subscriptions=subscriptions,
            deliveries=deliveries,
            shown=chosen,
            notice=notice,
            error="",
        )

    @router.post("/deliveries/replay")
    async def replay_all(request: Request) -> Response:
        """Every dead letter sent again; the page says how many."""
        _, _form, refused = await _acting(request)
        if refused is not None:
            return refused
        engine = _engine(request)
        count = await offload(feed.replay, engine.db, engine.clock.now())
        notice = f"{count} dead letters queued to be sent again."
        return RedirectResponse(f"/console/webhooks?{urlencode({'notice': notice})}", 303)

    @router.post("/deliveries/{delivery_id}/replay")
    async def replay(request: Request, delivery_id: int) -> Response:
        viewer, _form, refused = await _acting(request)
        if refused is not None:
            return refused
        engine = _engine(request)
        try:
            await offload(feed.replay, engine.db, engine.clock.now(), delivery_id=delivery_id)
        except EscrowflowError as exc:
            assert viewer is not None
            status = http_status(exc)
            return render_page(request, "error.html", viewer, status=status, message=exc.message)
        notice = f"Delivery {delivery_id} queued to be sent again."
        return RedirectResponse(f"/console/webhooks?{urlencode({'notice': notice})}", 303)

    @router.get("/workers")
    async def workers(request: Request) -> Response:
        viewer = await _viewer(request)
        if viewer is None:
            return _to_login()
        report = await offload(_workers, _engine(request))
        return render_page(request, "workers.html", viewer, report=report)

    return router


async def _with_error(
    request: Request,
    viewer: Viewer,
    page: str,
    exc: EscrowflowError,
    typed: dict[int, dict[str, str]] | None = None,
) -> Response:
    """The page again, with the engine's refusal on it (nothing changed), answered with
    the status the API gives the same refusal (`error_codes`)."""
    status = http_status(exc)
    if page == "disputes":
        found = await offload(_disputes, _engine(request), viewer)
        return render_page(
            request, "disputes.html", viewer, status=status, error=exc.message, notice="",
            typed=typed or {}, **found,
        )  # fmt: skip
    engine = _engine(request)
    board = await offload(_deadline_board, engine, engine.clock.now())
    return render_page(
        request, "deadlines.html", viewer, status=status, error=exc.message, notice="", **board
    )


def _disputes(engine: EscrowEngine, viewer: Viewer) -> dict[str, Any]:
    """The disputes page: disputed refunds, and (for an admin) what waits for a second
    admin (PA4)."""
    waiting = engine.decisions(admin_of(viewer), "pending") if viewer.can_act else []
    return {"refunds": dispute_desk.queue(engine.reads, engine.clock.now()), "approvals": waiting}


def _deadline_board(engine: EscrowEngine, now: datetime) -> dict[str, Any]:
    with translated_errors(), engine.reads.connect() as conn:
        board = deadlines.board(conn, now)
        frozen = deadlines.frozen(conn)
    return {
        **board,
        "frozen": frozen,
        "day": forecast.forecast(engine.reads, now, 1),
        "week": forecast.forecast(engine.reads, now, 7),
        "upcoming": lists.deadline_page(
            engine.reads, due_before=now + timedelta(days=7), limit=200
        ),
    }


def _workers(engine: EscrowEngine) -> dict[str, Any]:
    """What `escrowflow status` shows, and the lag: how late the most overdue deadline is."""
    report = worker_status(engine)
    with translated_errors(), engine.db.connect() as conn:
        oldest = deadlines.gauges(conn, report["now"])["oldest_due"]
    return {**report, "lag": report["now"] - oldest if oldest else None}


def _duration(text: str) -> timedelta:
    length = timedelta(0)
    if text.isascii() and len(text) <= 40:  # no full-width digits, no 5,000-digit days
        with contextlib.suppress(pydantic.ValidationError, OverflowError):
            length = _DURATION.validate_python(text)
    if length <= timedelta(0):
        raise ValidationError(f"extend by {text!r}: give an ISO 8601 duration, e.g. P2D or PT12H")
    return length
