"""ES3: a request made again with its Idempotency-Key gets the first result, not a
second effect; the same key for a different request is refused."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from storage import idempotency
from storage.errors import IdempotencyConflict, ValidationError
from storage.idempotency import MAX_KEY_LENGTH
from storage.statements import Statements

Result = dict[str, Any]


def fingerprint(request: Mapping[str, Any]) -> str:
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def replay(tx: Statements, key: str, request: Mapping[str, Any]) -> Result | None:
    """ES3: the stored result of a request already made with this key, if it was this one."""
    if not key or len(key) > MAX_KEY_LENGTH:
        raise ValidationError(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters",
            code="invalid_idempotency_key",
        )
    stored = idempotency.find(tx, key)
    if stored is None:
        return None
    if stored[0] != fingerprint(request):
        raise IdempotencyConflict(
            f"Idempotency-Key {key!r} was already used for a different request: "
            "use a new key for a new request"
        )
    return {**stored[1], "replayed": True}


def remember(
    tx: Statements, key: str, request: Mapping[str, Any], result: Result, now: datetime
) -> None:
    idempotency.remember(tx, key, fingerprint(request), result, now)
