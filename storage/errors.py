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
    # Trying the same thing again later may succeed (DL3: a deadline failing so is
    # retried for ever; any other failure gives up after a bounded number of attempts).
    retryable: ClassVar[bool] = False

    def __init_subclass__(cls, code: str | None = None, **kwargs: Any) -> None:
        """Each class names its stable code where it is declared: ``class X(Y, code=...)``."""
        super().__init_subclass__(**kwargs)
        if code is not None:
            cls.code = code

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


class ValidationError(EscrowflowError, code="invalid_input"):
    """The request is not valid: fix the input and try again."""


class MalformedRequest(ValidationError, code="malformed_request"):
    """The request itself is malformed (a header, the JSON): fix it and send it again."""


class NotFound(EscrowflowError, code="not_found"):
    """The thing asked for does not exist."""


class Unauthenticated(EscrowflowError, code="unauthenticated"):
    """No valid credentials: send `Authorization: Bearer <token>` (escrowflow tokens create)."""


class PermissionDenied(EscrowflowError, code="permission_denied"):
    """This party may not do that."""


class TransitionRejected(EscrowflowError, code="transition_rejected"):
    """The rules do not allow that event now."""


class ConflictError(EscrowflowError, code="conflict"):
    """Another change got there first: read the current state and try again."""


class VersionConflict(ConflictError, code="version_conflict"):
    """The entity has changed since the version you expected: re-read it and try again."""


class ConcurrentChange(ConflictError, code="concurrent_change"):
    """A concurrent change got there first: re-read and try again."""

    retryable = True


class IdempotencyConflict(ConflictError, code="idempotency_key_reused"):
    """This Idempotency-Key was already used for a different request: use a new key."""


class ToolMissing(EscrowflowError, code="tool_missing"):
    """A program escrowflow needs for this is not installed."""


class StorageError(EscrowflowError, code="storage_error"):
    """The database failed: check that it is reachable and migrated (escrowflow migrate)."""

    retryable = True


class StorageBusy(StorageError, code="storage_busy"):
    """The database is busy (a row lock held elsewhere, or every connection in use): try
    again in a moment."""


def busy_with_writes() -> StorageBusy:
    """A writer waited its turn for as long as it may (one writer at a time: SQLite)."""
    return StorageBusy(
        "the database is busy with other writes: try again in a moment",
        code="database_busy",
        details={"retry_after_seconds": 1},
    )
