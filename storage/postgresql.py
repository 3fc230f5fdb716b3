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
# SQLSTATEs that mean "this connection's server is no longer the primary, or no longer
# there": the connection is dropped and the pool's others with it, and the next one finds
# the primary among the URL's hosts (`target_session_attrs=read-write`). Class 08 is
# every connection exception; 57P01-57P03 a server shutting down or starting;
# 25006 a read-only transaction (a demoted primary, or a standby reached by mistake).
GONE_STATES = frozenset({"57P01", "57P02", "57P03", "25006"})
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
    return _pipelines(_ping_when_idle(_gone_servers(engine)))


def several_hosts(text: str) -> sa.URL:
    """libpq's several-host URL (`postgresql://u@h1:5432,h2:5433/db?...`), or a socket
    directory as libpq writes it (`postgresql://u@%2Frun%2Fpg/db`), as SQLAlchemy takes
    them (`postgresql://u@/db?host=h1:5432&host=h2:5433&...`); any other URL as is."""
    scheme, sep, rest = text.partition("://")
    netloc, _, tail = rest.partition("/")
    user, at, hosts = netloc.rpartition("@")
    if not sep or ("," not in hosts and "%" not in hosts):
        return sa.make_url(text)
    path, _, query = tail.partition("?")
    listed = "&".join(f"host={host}" for host in hosts.split(","))
    return sa.make_url(f"{scheme}://{user}{at}/{path}?{listed}{'&' if query else ''}{query}")


def _gone_servers(engine: Engine) -> Engine:
    """A server that is gone, shutting down or no longer the primary is a disconnection
    to SQLAlchemy: the connection is discarded, the pool's older ones with it."""

    @event.listens_for(engine, "handle_error")
    def _gone(context: sa.engine.ExceptionContext) -> None:
        state = _sqlstate(context.original_exception) or ""
        if state in GONE_STATES or state.startswith("08"):
            context.is_disconnect = True

    return engine


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


def in_ids(column: sa.ColumnElement[int]) -> sa.ColumnElement[bool]:
    """`column = ANY(:ids)`, the ids as one array parameter."""
    return column == sa.any_(sa.bindparam("ids", type_=ARRAY(sa.Integer)))


def claim(
    conn: Connection,
    query: sa.Select[Any],
    table: sa.Table,
    lease: dict[str, Any],
    rechecked: bool,
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

    def url(self, text: str) -> sa.URL:
        return several_hosts(text)

    def whereabouts(self, conn: Connection) -> dict[str, Any]:
        # The timeline is the first part of the current WAL file's name.
        timeline = conn.exec_driver_sql(
            "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"
        ).scalar_one()
        info = conn.connection.dbapi_connection.info  # type: ignore[union-attr]
        return {"host": f"{info.host}:{info.port}", "timeline": int(timeline)}

    def shown(self, url: sa.URL) -> str:
        return url.render_as_string(hide_password=True)

    def sole_worker(self, url: sa.URL) -> AbstractContextManager[None]:
        return nullcontext()  # workers share the server through their claims

    def write_turn(self, engine: Engine) -> AbstractContextManager[None]:
        return nullcontext()

    id_in = staticmethod(id_in)
    in_ids = staticmethod(in_ids)
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
