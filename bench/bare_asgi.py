"""The HTTP server's floor for bench/http.py: an ASGI app that reads each request's body
and answers one fixed JSON document, served by uvicorn as `escrowflow serve` serves the
API (uvloop, httptools, no access log). Under the same load as the API, what its server
spends a request is what uvicorn, the event loop and the kernel's sockets cost; the rest
of the API's is ours (FastAPI, our layers, the engine, the hop to the writing thread).

Not a test, and not part of escrowflow: `python -m uvicorn bench.bare_asgi:app`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

# What bench/http.py's clients read of an answer: an offer's id and its milestone's.
ANSWER = b'{"id": 1, "created": [{"id": 1}, {"id": 1}], "state": "released", "version": 1}'
HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(ANSWER)).encode()),
]


async def app(
    scope: MutableMapping[str, Any],
    receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
    send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
) -> None:
    """Answer every HTTP request 200 with `ANSWER`, once its body is read."""
    if scope["type"] != "http":  # lifespan: nothing to start or stop
        message = await receive()
        while message["type"] != "lifespan.shutdown":
            await send({"type": message["type"] + ".complete"})
            message = await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})
