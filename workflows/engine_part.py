"""What a part of `EscrowEngine` kept in a module of its own (terms plans, bulk actions)
may use of the engine: its database, terms, clock, fast path and unit of work."""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.engine import Engine as DBEngine

from storage.fastpath import FastPath
from storage.statements import Batch
from workflows.actors import Actor
from workflows.clock import Clock
from workflows.terms import TermsBook
from workflows.unit_of_work import UnitOfWork

Result = dict[str, Any]


class EnginePart:
    """A base of `EscrowEngine`; the engine provides these."""

    db: DBEngine
    terms: TermsBook
    clock: Clock
    fast: FastPath
    second_approval_above: int  # PA4

    def _unit(self, actor: Actor) -> AbstractContextManager[UnitOfWork]:
        raise NotImplementedError

    def work(
        self, conn: Connection, actor: Actor, cause: str, now: datetime, batch: Batch | None = None
    ) -> UnitOfWork:
        raise NotImplementedError
