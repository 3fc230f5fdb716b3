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
from fastapi import FastAPI

from escrowflow import tokens
from escrowflow.api import create_app
from escrowflow.api.write_turn import WriteTurn
from escrowflow.metrics import Metrics
from escrowflow.settings import Settings
from storage.db import one_writer
from workflows.engine import EscrowEngine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_SHARED: list[tuple[FastAPI, str, uvicorn.Server]] = []


@contextmanager
def live_server(engine: EscrowEngine, settings: Settings | None = None) -> Iterator[str]:
    """Serve the API for `engine` over real HTTP; yields the base URL.

    With the default settings, one app and server serve every test of this process, each
    test's engine bound to it in turn (`_bind`): building the app (a hundred routes)
    and starting and stopping a server for each test cost more than most tests."""
    if settings is None:
        if not _SHARED:
            app = create_app(_DEFAULT, engine=engine)
            url, server, _thread = _started(app)
            _SHARED.append((app, url, server))
        app, url, server = _SHARED[0]
        _bind(app, engine)
        try:
            yield url
        finally:
            # A request the test gave up on (a client timeout) ends on this test's
            # engine before the next test's is bound, as a stopped server would wait.
            deadline = time.monotonic() + 30
            while server.server_state.tasks and time.monotonic() < deadline:
                time.sleep(0.01)
        return
    with serving(create_app(settings, engine=engine)) as url:
        yield url


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """Serve `app` on a server of its own on 127.0.0.1, stopped at the end; yields the
    base URL."""
    url, server, thread = _started(app)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(10)


# No token cache: a test that revokes a token sees it refused at once.
_DEFAULT = Settings(api_token_cache_seconds=0)


def _bind(app: FastAPI, engine: EscrowEngine) -> None:
    """What `create_app` gives an app of its engine, given again for `engine`."""
    app.state.engine = engine
    app.state.metrics = Metrics(engine)
    app.state.token_cache = tokens.TokenCache(_DEFAULT.api_token_cache_seconds)
    app.state.write_turn = WriteTurn(one_writer(engine.db), app.state.settings.lock_timeout)


def _started(app: FastAPI) -> tuple[str, uvicorn.Server, threading.Thread]:
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
    return f"http://127.0.0.1:{port}", server, thread


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
