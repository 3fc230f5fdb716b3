"""The `escrowflow` command line. Errors: one line saying what to fix, non-zero exit.

What only some commands need (alembic, APScheduler, httpx, uvicorn, the diagram code) is
imported inside them: every command pays for the module-level imports at start-up.
"""

from escrowflow.cli import (  # noqa: F401  (register commands)
    approvals,
    bulk,
    lifecycle,
    lists,
    operations,
    services,
    terms,
)
from escrowflow.cli.common import app


def main() -> None:
    app(prog_name="escrowflow")
