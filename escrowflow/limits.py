"""Bounded requests: a body limit enforced while the body streams in, before
authentication and before parsing, a bound on JSON nesting, and text storage can keep
(`escrowflow.text`: no lone surrogate, NUL or control character in the query string, a
JSON body or a form).

A pure ASGI middleware, outermost in the app: a `Content-Length` over the limit is
refused before a byte of the body is read; a body without one is read only up to the
limit. What passes is handed to the app from memory (at most the limit, 1 MiB by
default).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from escrowflow.request_ids import CURRENT
from escrowflow.text import refused_in_json, refused_in_query

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_JSON_DEPTH = 32


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, max_depth: int = MAX_JSON_DEPTH) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        where = refused_in_query(scope.get("query_string", b"").decode("latin-1"))
        if where is not None:
            await _refuse_text(send, where)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._too_large(send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._too_large(send)
                return
            if not message.get("more_body", False):
                break
        if body and _nesting(bytes(body)) > self.max_depth:
            await _reply(
                send,
                400,
                "json_too_deep",
                f"the request body nests deeper than {self.max_depth} levels",
                {"limit": self.max_depth},
            )
            return
        where = _refused_in_body(scope, bytes(body)) if body else None
        if where is not None:
            await _refuse_text(send, where)
            return
        given = False

        async def replay() -> Message:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        await _reply(
            send,
            413,
            "body_too_large",
            f"the request body is larger than {self.max_bytes} bytes: send less",
            {"limit": self.max_bytes},
        )


def _refused_in_body(scope: Scope, body: bytes) -> str | None:
    content_type = next(
        (value for name, value in scope.get("headers", ()) if name == b"content-type"), b""
    )
    if content_type.startswith(b"application/x-www-form-urlencoded"):
        return refused_in_query(body.decode("utf-8", "surrogateescape"))
    return refused_in_json(body)


async def _refuse_text(send: Send, where: str) -> None:
    await _reply(
        send,
        422,
        "invalid_text",
        f"{where}: remove the control character, NUL or lone surrogate (text must be "
        "printable Unicode; tab and line breaks are fine)",
        {"field": where},
    )


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _nesting(body: bytes) -> int:
    """How deep brackets nest outside JSON strings (a cheap scan, no parsing)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


async def _reply(send: Send, status: int, code: str, message: str, details: dict[str, Any]) -> None:
    """Our JSON error, as every other error of the API; the connection is then closed."""
    body = json.dumps(
        {"code": code, "message": message, "details": details, "request_id": CURRENT.get()}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
