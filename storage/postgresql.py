"""PostgreSQL: what storage does differently there, and only there (beside `sqlite.py`;
`PostgreSQL` fills `dialect.Adapter`, and `dialect.adapter_of` is the one place that
chooses between the two).

Engines ping a pooled connection only after it sat idle, bound every lock wait
(`lock_timeout`), and answer SQLAlchemy's own statements at once inside a pipeline; a
pipelined transaction sends statements without waiting for their answers; a claim
picks, leases and returns rows in one statement, skipping rows others are claiming.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection, Engine

# A pooled connection idle this long is checked before use (the server may have restarted
# meanwhile). Busy connections are not: a ping per checkout is a round trip per
# transition (~150 us here). A connection that died while busy fails its one
# transaction, and SQLAlchemy then replaces every connection of the pool.
PING_AFTER_IDLE_SECONDS = 10.0

# SQLSTATEs that mean "wait and try again": lock_not_available (a lock_timeout ran out),
# serialization_failure, deadlock_detected; and a unique index refusing a row.
BUSY_STATES = frozenset({"55P03", "40001", "40P01"})
UNIQUE_VIOLATION = "23505"
UNDEFINED_TABLE = "42P01"

_PIPELINE = "escrowflow_pipeline"


def make(url: sa.URL, lock_timeout: float, **engine_kwargs: Any) -> Engine:
    """An engine on psycopg 3 whose connections wait at most `lock_timeout` seconds for
    a lock (then SQLSTATE 55P03)."""
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    options = f"-c lock_timeout={int(lock_timeout * 1000)}"
    connect_args = {"options": options, **engine_kwargs.pop("connect_args", {})}
    engine = sa.create_engine(url, connect_args=connect_args, **engine_kwargs)
    return _pipelines(_ping_when_idle(engine))


def _ping_when_idle(engine: Engine) -> Engine:
    """SQLAlchemy's pessimistic disconnect handling, for idle connections only."""

    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:  # the pool connects afresh
            raise sa.exc.DisconnectionError() from exc

    return engine


def _pipelines(engine: Engine) -> Engine:
    """In a pipelined transaction, a statement run by SQLAlchemy (not the engine's hot
    path) waits for its answer: SQLAlchemy reads a result's columns as soon as the
    statement is sent, and in a pipeline they come only when the client syncs."""

    @event.listens_for(engine, "after_cursor_execute")
    def _answer_now(conn: Connection, *_args: Any) -> None:
        pipeline = conn.info.get(_PIPELINE)
        if pipeline is not None:
            pipeline.sync()

    return engine


@contextmanager
def pipeline(conn: Connection) -> Iterator[None]:
    """psycopg's pipeline mode for the block: statements are sent without waiting for
    their answers; the client waits where it reads a result and at commit."""
    error = conn.dialect.loaded_dbapi.Error
    try:
        with conn.connection.dbapi_connection.pipeline() as piped:  # type: ignore[union-attr]
            conn.info[_PIPELINE] = piped
            try:
                yield
            finally:
                del conn.info[_PIPELINE]
    except error as exc:  # met at the pipeline's end: SQLAlchemy's, like any other
        raise sa.exc.DBAPIError.instance(None, None, exc, error) from exc


def id_in(column: sa.ColumnElement[int], ids: Sequence[int]) -> sa.ColumnElement[bool]:
    """`column = ANY(:ids)`: one array parameter however many ids, so a batch's statement
    text is the same every time (no 500-parameter text to build, parse and plan)."""
    return column == sa.any_(sa.bindparam("ids", list(ids), type_=ARRAY(sa.Integer)))


def claim(
    conn: Connection, query: sa.Select[Any], table: sa.Table, lease: dict[str, Any]
) -> list[sa.Row[Any]]:
    """The rows of `query`, given `lease`, in one statement; rows another worker is
    claiming right now are skipped (`FOR UPDATE SKIP LOCKED`), so several workers share
    the work without a leader. In no particular order."""
    # ARRAY(...) runs the locking pick once, before the update (an InitPlan).
    picked = query.with_only_columns(table.c.id).with_for_update(skip_locked=True)
    statement = (
        table.update()
        .where(table.c.id == sa.any_(sa.func.array(picked.scalar_subquery())))
        .values(lease)
        .returning(*query.selected_columns)
    )
    return list(conn.execute(statement).all())


def _sqlstate(error: BaseException) -> str | None:
    return getattr(error, "sqlstate", None)


class PostgreSQL:
    """`storage.dialect.Adapter` on PostgreSQL (psycopg 3)."""

    name = "postgresql"
    locks_rows = True
    takes_ids_ahead = True
    returns_ids = True
    unnests = True
    shares_clock = True
    stores_naive_utc = False
    alters_by_copy = False
    snapshot_options: dict[str, Any] = {"isolation_level": "REPEATABLE READ"}

    def make(
        self,
        url: sa.URL,
        lock_timeout: float,
        *,
        synchronous: str,
        create: bool,
        **engine_kwargs: Any,
    ) -> Engine:
        return make(url, lock_timeout, **engine_kwargs)

    def shown(self, url: sa.URL) -> str:
        return url.render_as_string(hide_password=True)

    def sole_worker(self, url: sa.URL) -> AbstractContextManager[None]:
        return nullcontext()  # workers share the server through their claims

    def write_turn(self, engine: Engine) -> AbstractContextManager[None]:
        return nullcontext()

    id_in = staticmethod(id_in)
    claim = staticmethod(claim)

    pipeline = staticmethod(pipeline)

    def insert(self, table: sa.Table) -> Any:
        return pg.insert(table)

    def utc_day(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        return sa.cast(sa.func.timezone("UTC", column), sa.Date)

    def index_condition(self, column: sa.ColumnElement[Any], value: str) -> sa.ColumnElement[bool]:
        return column == value

    def owns(self, error: BaseException) -> bool:
        return type(error).__module__.startswith("psycopg")

    def constraint_of(self, error: BaseException) -> str | None:
        named = getattr(getattr(error, "diag", None), "constraint_name", None)
        return str(named) if named else None

    def is_unique_violation(self, error: BaseException) -> bool:
        return _sqlstate(error) == UNIQUE_VIOLATION

    def is_busy(self, error: BaseException) -> bool:
        return _sqlstate(error) in BUSY_STATES

    def is_not_migrated(self, error: BaseException) -> bool:
        return _sqlstate(error) == UNDEFINED_TABLE

    def is_unopenable(self, error: BaseException) -> bool:
        return False
