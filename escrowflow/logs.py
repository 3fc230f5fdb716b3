"""How escrowflow's processes log: one JSON object a line on standard error, each line
written while a request is served naming the request (`escrowflow.request_ids`)."""

from __future__ import annotations

import logging
import sys

from escrowflow.request_ids import InLogs
from scheduler.worker import JsonLines


def json_handler() -> logging.Handler:
    """A handler writing JSON lines to standard error."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines())
    handler.addFilter(InLogs())  # each line written while serving a request names it
    return handler


def log_json_lines() -> None:
    """Log INFO and above as JSON lines, APScheduler's WARNING and above."""
    logging.basicConfig(level=logging.INFO, handlers=[json_handler()], force=True)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
