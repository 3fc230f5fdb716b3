"""Every HTTP request has an id: the caller's `X-Request-Id` if it is a sane token, else a
new one. It is echoed in the response's `X-Request-Id`, carried in every error body
(`request_id`) and in every log line written while the request is served, so a 503's
caller and the operator reading the log (which has the driver's detail) name the same
request."""

from __future__ import annotations

import logging
import re
import uuid
from contextvars import ContextVar

HEADER = "X-Request-Id"
CURRENT: ContextVar[str | None] = ContextVar("escrowflow_request_id", default=None)
_SANE = re.compile(r"[A-Za-z0-9._:-]{1,100}")


def accept(given: str | None) -> str:
    """The caller's id if it is 1-100 letters, digits or `._:-`; a new one otherwise."""
    return given if given is not None and _SANE.fullmatch(given) else uuid.uuid4().hex


class InLogs(logging.Filter):
    """Adds the current request's id to each log record's fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = CURRENT.get()
        if request_id is not None:
            record.fields = {**getattr(record, "fields", {}), "request_id": request_id}
        return True
