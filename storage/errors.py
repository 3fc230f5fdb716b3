"""The one exception hierarchy of escrowflow.

Every error the engine raises on purpose is an :class:`EscrowflowError`. Each instance
carries a stable, machine-readable ``code`` (more precise than its class, e.g.
``amount_below_minimum``) and a human ``message`` that names the thing and the fix. A
class's docstring is its default message.

No transport concerns here: how the shells answer each class (HTTP status, CLI exit
code) is decided once, in `escrowflow/error_codes.py`. The hierarchy lives in the lowest
layer so that storage can translate driver errors into domain errors once, at its
boundary, and every layer above can raise them.
"""

from __future__ import annotations

from typing import Any, ClassVar


class EscrowflowError(Exception):
    """Something went wrong in escrowflow."""

    code: ClassVar[str] = "error"

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.message = message or (self.__doc__ or "").strip()
        # An instance may carry a more precise code than its class.
        self.code = code or type(self).code  # type: ignore[misc]
        self.details = details or {}
        super().__init__(self.message)

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


class ValidationError(EscrowflowError):
    """The request is not valid: fix the input and try again."""

    code = "invalid_input"


class MalformedRequest(ValidationError):
    """The request itself is malformed (a header, the JSON): fix it and send it again."""

    code = "malformed_request"


class NotFound(EscrowflowError):
    """The thing asked for does not exist."""

    code = "not_found"


class Unauthenticated(EscrowflowError):
    """No valid credentials: send `Authorization: Bearer <token>` (escrowflow tokens create)."""

    code = "unauthenticated"


class PermissionDenied(EscrowflowError):
    """This party may not do that."""

    code = "permission_denied"


class TransitionRejected(EscrowflowError):
    """The rules do not allow that event now."""

    code = "transition_rejected"


class ConflictError(EscrowflowError):
    """Another change got there first: read the current state and try again."""

    code = "conflict"


class VersionConflict(ConflictError):
    """The entity has changed since the version you expected: re-read it and try again."""

    code = "version_conflict"


class IdempotencyConflict(ConflictError):
    """This Idempotency-Key was already used for a different request: use a new key."""

    code = "idempotency_key_reused"


class ToolMissing(EscrowflowError):
    """A program escrowflow needs for this is not installed."""

    code = "tool_missing"


class StorageError(EscrowflowError):
    """The database failed: check that it is reachable and migrated (escrowflow migrate)."""

    code = "storage_error"
