"""Column types and index helpers shared by every table."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlmodel import Field


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use the engine's Clock")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def when(**kw: Any) -> Any:
    return Field(sa_type=UTCDateTime, **kw)


def partial(condition: str) -> dict[str, Any]:
    """`WHERE condition` for a partial index on both backends."""
    clause = sa.text(condition)
    return {"sqlite_where": clause, "postgresql_where": clause}


def pending_only(column: str, *values: str) -> dict[str, Any]:
    """`WHERE column IN (...)` for a partial index on both backends."""
    listed = ", ".join(f"'{v}'" for v in values)
    return partial(f"{column} IN ({listed})")
