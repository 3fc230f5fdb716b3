"""Column types and index helpers shared by every table."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel

from storage.dialect import adapter_of


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    # The processors are made once per dialect (SQLAlchemy caches them), so the backend's
    # choice is made then, not for every value; each keeps the inner type's processing.

    def bind_processor(self, dialect: Dialect) -> Callable[[datetime | None], Any]:
        naive = adapter_of(dialect).stores_naive_utc
        inner = self.impl_instance.bind_processor(dialect)
        if naive and inner is not None:
            return _as_text

        def process(value: datetime | None) -> Any:
            if value is None:
                return None
            if value.tzinfo is None:
                raise ValueError("naive datetime given to the database; use the engine's Clock")
            value = value.astimezone(UTC)
            if naive:
                value = value.replace(tzinfo=None)
            return value if inner is None else inner(value)

        return process

    def result_processor(
        self, dialect: Dialect, coltype: object
    ) -> Callable[[Any], datetime | None]:
        inner = self.impl_instance.result_processor(dialect, coltype)
        if adapter_of(dialect).stores_naive_utc and inner is not None:
            return _from_text

        def process(value: Any) -> datetime | None:
            if inner is not None:
                value = inner(value)
            if value is None:
                return None
            moment: datetime = value
            return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)

        return process


# Where datetimes are stored as text (SQLite), SQLAlchemy's own processors format and parse
# them with strftime and a regular expression; these write the same text ("YYYY-MM-DD
# HH:MM:SS.ffffff", UTC, which sorts as time does) and read it with the C parser, a
# tenth of the cost on every timestamp a sweep reads and writes. tests/unit/
# test_dialects.py holds them to SQLAlchemy's.


def _as_text(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime given to the database; use the engine's Clock")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", timespec="microseconds")


_STORED = len("YYYY-MM-DD HH:MM:SS.ffffff")


def _from_text(value: Any) -> datetime | None:
    if value is None:
        return None
    if value.__class__ is str and len(value) == _STORED:  # as `_as_text` wrote it: UTC
        return datetime.fromisoformat(value + "+00:00")  # a sixth of parse-then-replace
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def when(**kw: Any) -> Any:
    return Field(sa_type=UTCDateTime, **kw)


def partial(condition: str) -> dict[str, Any]:
    """`WHERE condition` for a partial index on both backends."""
    clause = sa.text(condition)
    return {"sqlite_where": clause, "postgresql_where": clause}


def one_of(name: str, column: str, *values: str) -> sa.CheckConstraint:
    """`CHECK (column IN (...))`, named `name`."""
    listed = ", ".join(f"'{v}'" for v in values)
    return sa.CheckConstraint(f"{column} IN ({listed})", name=name)


def pending_only(column: str, *values: str) -> dict[str, Any]:
    """`WHERE column IN (...)` for a partial index on both backends."""
    listed = ", ".join(f"'{v}'" for v in values)
    return partial(f"{column} IN ({listed})")


# -- column groups several tables share (SQLModel data models, not tables) ----------


class Lifecycle(SQLModel):
    """An entity with a lifecycle: its machine's state and an optimistic-lock version."""

    id: int | None = Field(default=None, primary_key=True)
    state: str = Field(max_length=40)
    version: int = 1
    created_at: datetime = when()
    updated_at: datetime = when()


class MilestoneChange(SQLModel):
    """The milestone fields a change request or a proposal item may set (None: unchanged)."""

    title: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=5000)
    due_date: date | None = None
    amount: int | None = Field(default=None, sa_type=sa.BigInteger)


class Leased(SQLModel):
    """Work a worker claims for a while (deadlines, webhook deliveries): others skip it
    until the lease runs out; a failure is retried from `next_attempt_at`."""

    attempts: int = 0
    last_error: str | None = Field(default=None, max_length=2000)
    claimed_by: str | None = Field(default=None, max_length=100)
    claim_expires_at: datetime | None = when(default=None)
