"""A webhook receiver on 127.0.0.1 that records what it is sent."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.live import free_port


class _Server(ThreadingHTTPServer):
    allow_reuse_port = True  # bound beside the placeholder that keeps the port ours


class Receiver:
    """An HTTP endpoint on 127.0.0.1 that records what it is sent. `stop()` takes it off
    the network (connection refused), `start()` brings it back on the same port.

    While stopped, the port stays bound (a socket that does not listen, so connections
    are refused): no other test's receiver can take it meanwhile and be sent this one's
    deliveries (as happened when tests run side by side)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.status = 200
        self._server: ThreadingHTTPServer | None = None
        self._placeholder: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                body = self.rfile.read(length)
                if len(body) < length:  # the sender went away mid-request: not delivered
                    return
                receiver.received.append((dict(self.headers), body))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = _Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        if self._placeholder is not None:
            self._placeholder.close()
            self._placeholder = None

    def stop(self) -> None:
        if self._server is not None:
            self._placeholder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            self._placeholder.bind(("127.0.0.1", self.port))
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def close(self) -> None:
        """Off the network for good, the port let go."""
        self.stop()
        if self._placeholder is not None:
            self._placeholder.close()
            self._placeholder = None

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.received]
