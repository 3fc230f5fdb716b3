"""A real uvicorn server on 127.0.0.1, in a thread, around the test's engine; a client."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn

from escrowflow import tokens
from escrowflow.api import create_app
from escrowflow.settings import Settings
from workflows.engine import EscrowEngine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def live_server(engine: EscrowEngine, settings: Settings | None = None) -> Iterator[str]:
    """Serve the API for `engine` over real HTTP; yields the base URL."""
    # No token cache: a test that revokes a token sees it refused at once.
    app = create_app(settings or Settings(api_token_cache_seconds=0), engine=engine)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


class Api:
    """Speaks to the API as a service with a token; `as_` names the acting party."""

    def __init__(self, base_url: str, engine: EscrowEngine) -> None:
        self.base_url = base_url
        self.engine = engine
        self.http = httpx.Client(base_url=base_url, timeout=30)

    def token(self, *scopes: str, service: str = "web") -> str:
        return str(tokens.create(self.engine.db, self.engine.clock.now(), service, scopes)["token"])

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None,
        actor: str | None = None,
        json: Any = None,
        key: str | None = None,
        if_match: str | None = None,
        timeout: float | None = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if actor is not None:
            headers["Escrowflow-Actor"] = actor
        if key is not None:
            headers["Idempotency-Key"] = key
        if if_match is not None:
            headers["If-Match"] = if_match
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        return self.http.request(method, path, headers=headers, json=json, params=params, **extra)

    def ok(self, method: str, path: str, **kw: Any) -> Any:
        response = self.request(method, path, **kw)
        assert response.status_code < 300, (response.status_code, response.text)
        return response.json() if response.content else None

    def close(self) -> None:
        self.http.close()
