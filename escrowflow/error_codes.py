"""How the shells answer each domain error: its HTTP status and its CLI exit code.

The only place these numbers live. The hierarchy (`storage/errors.py`) knows nothing of
transports; an error is answered by the entry of the nearest class in its MRO.
"""

from __future__ import annotations

from storage import errors as e

HTTP_STATUS: dict[type[e.EscrowflowError], int] = {
    e.EscrowflowError: 500,
    e.ValidationError: 422,
    e.MalformedRequest: 400,
    e.NotFound: 404,
    e.Unauthenticated: 401,
    e.PermissionDenied: 403,
    e.TransitionRejected: 409,
    e.ConflictError: 409,
    e.VersionConflict: 412,
    e.IdempotencyConflict: 422,
    e.ToolMissing: 503,
    e.StorageError: 503,
}

# Not a domain error: `serve` could not listen on its address.
ADDRESS_IN_USE = 9

EXIT_CODE: dict[type[e.EscrowflowError], int] = {
    e.EscrowflowError: 1,
    e.ValidationError: 2,
    e.NotFound: 3,
    e.Unauthenticated: 4,
    e.PermissionDenied: 4,
    e.TransitionRejected: 5,
    e.ConflictError: 6,
    e.StorageError: 7,
    e.ToolMissing: 8,
}


def _nearest(table: dict[type[e.EscrowflowError], int], error: e.EscrowflowError) -> int:
    for kind in type(error).__mro__:
        if kind in table:
            return table[kind]
    raise AssertionError(f"{type(error).__name__} is not an EscrowflowError")


def http_status(error: e.EscrowflowError) -> int:
    """The HTTP status that answers `error`."""
    return _nearest(HTTP_STATUS, error)


def exit_code(error: e.EscrowflowError) -> int:
    """The CLI exit code that `error` ends a command with."""
    return _nearest(EXIT_CODE, error)
