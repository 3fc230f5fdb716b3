"""Console sign-ins: a session per browser, held in this process's memory.

The browser keeps only a random session id, in an HttpOnly, SameSite=Strict cookie
(Secure over TLS); the API token it signed in with stays on the server and is checked
again on every request (through the API's token cache), so revoking the token ends the
session within `ESCROWFLOW_API_TOKEN_CACHE_SECONDS`. Every form carries the session's
CSRF token. Sessions live in one process: behind a load balancer, pin a browser to a
node, or sign in again after a restart.
"""

from __future__ import annotations

import hmac
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from escrowflow import tokens
from workflows.actors import Role

COOKIE = "escrowflow_console"


@dataclass
class Session:
    token: str
    csrf: str
    expires_at: datetime


class Sessions:
    """The live sign-ins, by their random id."""

    def __init__(self, lifetime: timedelta) -> None:
        self.lifetime = lifetime
        self._by_id: dict[str, Session] = {}
        self._lock = threading.Lock()

    def start(self, token: str, now: datetime) -> str:
        session_id = secrets.token_urlsafe(32)
        with self._lock:
            self._forget_expired(now)
            self._by_id[session_id] = Session(token, secrets.token_urlsafe(32), now + self.lifetime)
        return session_id

    def find(self, session_id: str | None, now: datetime) -> Session | None:
        if not session_id:
            return None
        with self._lock:
            session = self._by_id.get(session_id)
            if session is not None and session.expires_at <= now:
                del self._by_id[session_id]
                return None
            return session

    def end(self, session_id: str | None) -> None:
        with self._lock:
            self._by_id.pop(session_id or "", None)

    def _forget_expired(self, now: datetime) -> None:
        for key in [k for k, s in self._by_id.items() if s.expires_at <= now]:
            del self._by_id[key]


def same_csrf(session: Session, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(session.csrf, given)


class Viewer:
    """A signed-in person: the session, and the token's caller."""

    def __init__(self, session_id: str, session: Session, caller: tokens.Caller) -> None:
        self.session_id = session_id
        self.session = session
        self.caller = caller
        self.can_act = Role.ADMIN in caller.roles
