"""API bearer tokens: one per calling service, with scopes, stored only as a SHA-256.

Scopes say in which role a service may act (the request names the party, the engine
checks role and membership, PA1/PA2) and what else it may do:

- ``act:client``, ``act:freelancer``, ``act:admin`` (the dispute team): fire events in that
  role, and read;
- ``read``: read entities, history, ledgers and the event feed;
- ``webhooks``: manage webhook subscriptions, and read.

The system role is never granted: only the engine's own timers act as `system`.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine as DBEngine

from storage import api_tokens
from storage.errors import NotFound, Unauthenticated, ValidationError
from workflows.actors import Role

ACTING_SCOPES: dict[str, Role] = {
    "act:client": Role.CLIENT,
    "act:freelancer": Role.FREELANCER,
    "act:admin": Role.ADMIN,
}
SCOPES = (*ACTING_SCOPES, "read", "webhooks")
PREFIX = "efk_"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the service a valid token names, and what it may do."""

    token_id: int
    service: str
    scopes: frozenset[str]

    def may_act_as(self, role: Role) -> bool:
        return any(ACTING_SCOPES[s] is role for s in self.scopes if s in ACTING_SCOPES)

    @property
    def roles(self) -> list[Role]:
        return [ACTING_SCOPES[s] for s in sorted(self.scopes) if s in ACTING_SCOPES]


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_scopes(scopes: Iterable[str]) -> list[str]:
    chosen = sorted(set(scopes))
    unknown = [s for s in chosen if s not in SCOPES]
    if unknown or not chosen:
        raise ValidationError(
            f"unknown or missing scopes {unknown or '[]'}: give one or more of {', '.join(SCOPES)}",
            code="invalid_scope",
        )
    return chosen


def create(db: DBEngine, now: datetime, service: str, scopes: Iterable[str]) -> dict[str, Any]:
    """A new token. The token itself is in the answer, and nowhere else, ever."""
    service = service.strip()
    if not service or len(service) > 100:
        raise ValidationError("service must be 1 to 100 characters", code="invalid_service")
    chosen = check_scopes(scopes)
    token = PREFIX + secrets.token_urlsafe(32)
    values = {
        "service": service,
        "scopes": chosen,
        "token_hash": digest(token),
        "prefix": token[:12],
        "created_at": now,
    }
    token_id = api_tokens.insert(db, values)
    return {"id": token_id, "service": service, "scopes": chosen, "token": token}


def listing(db: DBEngine) -> list[dict[str, Any]]:
    return api_tokens.listing(db)


def revoke(db: DBEngine, now: datetime, token_id: int) -> None:
    if not api_tokens.revoke(db, now, token_id):
        raise NotFound(f"no live token with id {token_id}", code="token_not_found")


class TokenCache:
    """Valid tokens remembered for `ttl` seconds: a request need not read the database
    to authenticate. A revocation therefore takes effect within `ttl` (0: at once)."""

    def __init__(self, ttl: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._monotonic = monotonic
        self._known: dict[str, tuple[float, Caller]] = {}
        self._lock = threading.Lock()

    def known(self, authorization: str | None) -> Caller | None:
        """The caller, if this token was found valid less than `ttl` ago."""
        if self.ttl <= 0 or not authorization:
            return None
        with self._lock:
            known = self._known.get(authorization)
        if known is not None and self._monotonic() - known[0] < self.ttl:
            return known[1]
        return None

    def authenticate(self, db: DBEngine, authorization: str | None) -> Caller:
        known = self.known(authorization)
        if known is not None:
            return known
        now = self._monotonic()
        caller = authenticate(db, authorization)
        if self.ttl <= 0 or authorization is None:
            return caller
        with self._lock:
            if len(self._known) > 10_000:  # bounded: a flood of tokens cannot grow it
                self._known.clear()
            self._known[authorization] = (now, caller)
        return caller


def authenticate(db: DBEngine, authorization: str | None) -> Caller:
    """The caller a bearer token names; 401 without one or with a wrong or revoked one."""
    if not authorization:
        raise Unauthenticated()
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated(
            "the Authorization header must be `Bearer <token>`", code="unauthenticated"
        )
    row = api_tokens.live(db, digest(token.strip()))
    if row is None:
        raise Unauthenticated("the token is unknown or revoked", code="invalid_token")
    return Caller(row.id, row.service, frozenset(row.scopes))
