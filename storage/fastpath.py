"""Prepared statements run straight on the DBAPI cursor, for the engine's hot path.

SQLAlchemy Core costs ~75 us per execute in Python (cache key, execution context,
result wrapping); the driver itself ~6 us for the same insert. An event writes about
eight statements, so the engine builds them with SQLAlchemy, compiles each once per
dialect, and runs them here: the SQL, the parameter order and the type conversions are
SQLAlchemy's own (its public `bind_processor`/`result_processor`), only the per-call
machinery is skipped. The cursor is the connection's, inside its transaction. Driver
errors are re-raised as SQLAlchemy's, so `storage.db.translated_errors` maps them as
it maps every other.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql.compiler import SQLCompiler

from storage.dialect import adapter_of

Processor = Callable[[Any], Any]
T = TypeVar("T")


class Prepared:
    """One statement compiled for one dialect, with its parameter conversions."""

    def __init__(self, statement: sa.ClauseElement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        self.compiled = compiled
        self.sql = str(compiled)
        self.positional = bool(compiled.positional)
        self.order = list(compiled.positiontup or ()) if self.positional else []
        # (name, required, default, conversion) of every parameter, in driver order.
        names = self.order if self.positional else list(compiled.binds)
        self.binds: list[tuple[str, bool, Any, Processor | None]] = []
        for name in names:
            bind = compiled.binds[name]
            processor: Processor | None = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None and _is_datetime(bind.type):
                processor = _remember_last(processor)
            self.binds.append((name, bool(bind.required), bind.value, processor))
        self.names = [name for name, *_ in self.binds]
        # The hot path: every parameter given (a batch's rows), read with one getter and
        # converted where a conversion is needed; otherwise `_parameters` (defaults).
        self._get = operator.itemgetter(*self.names) if len(self.names) > 1 else None
        # The same, for a row given by column name (`insert_statement`, `update_statement`).
        by_column = [_column_of(name) for name in self.names]
        self._get_row = operator.itemgetter(*by_column) if len(by_column) > 1 else None
        self._convert = [(i, p) for i, (_, _, _, p) in enumerate(self.binds) if p is not None]
        # Selected column names, and (position, conversion) of those that need one.
        self.keys: list[str] = []
        self.converters: list[tuple[int, Processor]] = []
        if isinstance(statement, sa.Select):
            for index, column in enumerate(statement.selected_columns):
                self.keys.append(str(column.key))
                impl = column.type.dialect_impl(dialect)
                result = impl.result_processor(dialect, None)
                if result is not None:
                    self.converters.append((index, result))

    def parameters(self, values: Mapping[str, Any]) -> Any:
        """The driver's parameters from `values` by parameter name."""
        if self._get is None:
            return self._parameters(values)
        try:
            found = self._get(values)
        except KeyError:  # a parameter left to its default
            return self._parameters(values)
        return self._converted(found)

    def row_parameters(self, row: Mapping[str, Any]) -> Any:
        """The driver's parameters of an `insert_statement` or `update_statement` from
        `row` by column name (and `pk`): no renamed copy of the row on the hot path."""
        if self._get_row is None:
            return self._parameters(values_of(row))
        try:
            found = self._get_row(row)
        except KeyError:  # a parameter left to its default
            return self._parameters(values_of(row))
        return self._converted(found)

    def _converted(self, found: Any) -> Any:
        if self._convert:
            found = list(found)
            for index, processor in self._convert:
                found[index] = processor(found[index])
        if self.positional:
            return tuple(found)
        return dict(zip(self.names, found, strict=True))

    def _parameters(self, values: Mapping[str, Any]) -> Any:
        converted: list[Any] = []
        for name, required, default, processor in self.binds:
            if name in values:
                value = values[name]
            elif required:
                raise sa.exc.ArgumentError(f"no value for parameter {name!r}")
            else:
                value = default
            converted.append(value if processor is None else processor(value))
        if self.positional:
            return tuple(converted)
        return dict(zip(self.names, converted, strict=True))


class Unnested:
    """Many rows in one statement on PostgreSQL: each column's values travel as one
    array and `unnest` turns them back into rows.

    Per row, the server then skips a statement's parse, plan and executor start-up, and
    the driver its per-statement work (measured in `bench/deadlines.py`: the sweep's
    writes, ~25 us of server time per row as single statements). For the statements
    of `insert_statement` (without RETURNING) and `update_statement`; the parameters are
    the row statement's own, converted by SQLAlchemy as for one row.

    A column with the same value in every row (a batch's `now`, a fired deadline's
    status, an event's type) travels once, as a scalar, not as an array of copies: the
    driver builds binary arrays element by element in Python, and most of a sweep's
    columns are the same for the whole batch. Each pattern of such columns is its own
    statement text, built once.
    """

    def __init__(
        self, into: str, columns: list[str], types: list[str], names: list[str], update: bool
    ) -> None:
        self._into = into
        self._columns = columns
        self._types = types
        self.names = names
        self._update = update
        self._texts: dict[tuple[bool, ...], str] = {}

    @classmethod
    def of(cls, prepared: Prepared, dialect: Dialect) -> Unnested | None:
        """The set form of `prepared`, if it has one."""
        statement = prepared.compiled.statement
        names = [name for name, *_ in prepared.binds]
        update = isinstance(statement, sa.Update)
        if prepared.positional or not isinstance(statement, sa.Insert | sa.Update):
            return None
        if statement.returning_column_descriptions:  # an id each: one by one
            return None
        expected = {"pk"} if update else set()
        if {n for n in names if not n.startswith(("v_", "d_"))} != expected:
            return None
        table = statement.table
        assert isinstance(table, sa.Table)
        quote = dialect.identifier_preparer.quote
        columns = [quote("id" if name == "pk" else name[2:]) for name in names]
        types = [prepared.compiled.binds[name].type.compile(dialect=dialect) for name in names]
        return cls(quote(table.name), columns, types, names, update)

    def takes(self, params: Sequence[Mapping[str, Any]]) -> bool:
        """Whether these rows can go together: an update's rows each change another row
        (UPDATE ... FROM would apply only one of two changes to the same row)."""
        if not self._update:
            return True
        return len({row["pk"] for row in params}) == len(params)

    def statement(self, params: Sequence[Mapping[str, Any]]) -> tuple[str, list[Any]]:
        """The statement for these rows and its parameters, in the order they appear in
        it: the columns the same in every row first (scalars), then the arrays."""
        values = [[row[name] for row in params] for name in self.names]
        same = tuple(
            name != "pk" and _all_same(column)
            for name, column in zip(self.names, values, strict=True)
        )
        if all(same):  # unnest needs an array: the first column stays one
            same = (False, *same[1:])
        text = self._texts.get(same)
        if text is None:
            text = self._texts[same] = self._text(same)
        scalars = [column[0] for column, one in zip(values, same, strict=True) if one]
        return text, scalars + [column for column, one in zip(values, same, strict=True) if not one]

    def _text(self, same: tuple[bool, ...]) -> str:
        into = self._into
        each = list(zip(self._columns, self._types, same, strict=True))
        arrays = ", ".join(f"%b::{type_}[]" for _, type_, one in each if not one)
        listed = ", ".join(column for column, _, one in each if not one)
        if self._update:
            sets = ", ".join(
                f"{column} = %b::{type_}" if one else f"{column} = u.{column}"
                for column, type_, one in each
                if column != "id"
            )
            return (
                f"UPDATE {into} SET {sets} FROM unnest({arrays}) AS u({listed}) "
                f"WHERE {into}.id = u.id"
            )
        # In the rows' order, so ids from the sequence follow it.
        picked = ", ".join(f"%b::{type_}" if one else column for column, type_, one in each)
        return (
            f"INSERT INTO {into} ({', '.join(self._columns)}) SELECT {picked} "
            f"FROM unnest({arrays}) WITH ORDINALITY AS u({listed}, ordinality) ORDER BY ordinality"
        )


def _all_same(values: Sequence[Any]) -> bool:
    """Whether every value is the first (the very object, or equal to it)."""
    first = values[0]
    return all(value is first or value == first for value in values)


def _is_datetime(type_: sa.types.TypeEngine[Any]) -> bool:
    return isinstance(getattr(type_, "impl_instance", type_), sa.DateTime)


def _remember_last(processor: Processor) -> Processor:
    """`processor`, skipped when given the very object it converted last.

    A transaction stamps one `now` on every row it writes; converting it costs more
    than the rest of a parameter's handling. Only for datetimes: they are immutable,
    so the same object always converts to the same value.
    """
    last: list[Any] = [object(), None]

    def convert(value: Any) -> Any:
        if value is not last[0]:
            last[0], last[1] = value, processor(value)
        return last[1]

    return convert


_COMPILED: dict[tuple[Any, Any], Prepared] = {}
"""Prepared statements by (dialect class, server version) and key. A key names one
statement in the process: a module-level statement, or (kind, table, columns)."""


class FastPath:
    """Caches prepared statements by key and runs them on a connection's cursor."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.adapter = adapter_of(dialect)
        self._prepared: dict[Any, Prepared] = {}
        self._unnested_cache: dict[Any, Unnested | None] = {}

    def prepare(self, key: Any, build: Callable[..., sa.ClauseElement], *args: Any) -> Prepared:
        """The statement `build(*args)` compiled for this dialect, once per `key` in the
        process (an engine made again, as a CLI command or a test does, compiles none)."""
        prepared = self._prepared.get(key)
        if prepared is None:
            kind = (type(self.dialect), self.dialect.server_version_info)
            prepared = _COMPILED.get((kind, key))
            if prepared is None:
                prepared = _COMPILED[(kind, key)] = Prepared(build(*args), self.dialect)
            self._prepared[key] = prepared
        return prepared

    @contextmanager
    def _driver_errors(self, sql: str, params: Any) -> Iterator[None]:
        """A driver error (in a pipeline it may come from an earlier statement) raised
        as SQLAlchemy's, so `storage.db.translated_errors` maps it as any other."""
        try:
            yield
        except self.dialect.loaded_dbapi.Error as exc:
            raise sa.exc.DBAPIError.instance(
                sql, params, exc, self.dialect.loaded_dbapi.Error
            ) from exc

    def _call(
        self, conn: Connection, sql: str, params: Any, read: Callable[[Any], T], many: bool = False
    ) -> T:
        """Run `sql` on the connection's cursor and `read` its answer."""
        cursor = conn.connection.cursor()
        try:
            with self._driver_errors(sql, params):
                if many:
                    cursor.executemany(sql, params)
                else:
                    cursor.execute(sql, params)
                return read(cursor)
        finally:
            cursor.close()

    def execute(
        self,
        conn: Connection,
        prepared: Prepared,
        values: Mapping[str, Any],
        *,
        by_column: bool = False,
    ) -> None:
        """Run an INSERT/UPDATE/DELETE (in a pipeline, without waiting for it); `values`
        by parameter name, or (`by_column`) a row by column name."""
        params = prepared.row_parameters(values) if by_column else prepared.parameters(values)
        self._call(conn, prepared.sql, params, _nothing)

    def execute_many(
        self,
        conn: Connection,
        prepared: Prepared,
        rows: Sequence[Mapping[str, Any]],
        *,
        by_column: bool = False,
    ) -> None:
        """Run one INSERT/UPDATE for many parameter sets.

        On PostgreSQL, rows of an `insert_statement` or an `update_statement` go as one
        statement over arrays (`Unnested`); otherwise the driver loops over the rows.
        """
        convert = prepared.row_parameters if by_column else prepared.parameters
        params = [convert(values) for values in rows]
        unnested = self._unnested(prepared) if len(params) > 1 else None
        if unnested is not None and unnested.takes(params):
            sql, arrays = unnested.statement(params)
            self._call(conn, sql, arrays, _nothing)
        elif len(params) == 1:
            self._call(conn, prepared.sql, params[0], _nothing)
        else:
            self._call(conn, prepared.sql, params, _nothing, many=True)

    def _unnested(self, prepared: Prepared) -> Unnested | None:
        if not self.adapter.unnests:
            return None
        key = ("unnested", prepared)
        if key not in self._unnested_cache:
            self._unnested_cache[key] = Unnested.of(prepared, self.dialect)
        return self._unnested_cache[key]

    def insert(self, conn: Connection, prepared: Prepared, row: Mapping[str, Any]) -> int:
        """Run an `insert_statement` with `RETURNING id` (or read SQLite's lastrowid),
        `row` by column name."""
        read = _first_value if self.adapter.returns_ids else _lastrowid
        return int(self._call(conn, prepared.sql, prepared.row_parameters(row), read))

    def fetch_row(
        self, conn: Connection, prepared: Prepared, values: Mapping[str, Any]
    ) -> list[Any] | None:
        """The first row's values, converted, in the order of `prepared.keys`."""
        return self.fetch_rows(conn, [(prepared, values)])[0]

    def fetch_rows(
        self, conn: Connection, reads: Sequence[tuple[Prepared, Mapping[str, Any]]]
    ) -> list[list[Any] | None]:
        """The first row of each read, all sent before any answer is read: in a
        pipelined transaction (`storage.db.transaction`) they cost one round trip, and
        the server still runs them in order (a lock first, then reads under it)."""
        cursors = []
        try:
            for prepared, values in reads:
                params = prepared.parameters(values)
                cursors.append(cursor := conn.connection.cursor())
                with self._driver_errors(prepared.sql, params):
                    cursor.execute(prepared.sql, params)
            rows = []
            for (prepared, _), cursor in zip(reads, cursors, strict=True):
                with self._driver_errors(prepared.sql, None):
                    rows.append(self._converted(prepared, cursor.fetchone()))
            return rows
        finally:
            for cursor in cursors:
                cursor.close()

    @staticmethod
    def _converted(prepared: Prepared, row: Any) -> list[Any] | None:
        if row is None:
            return None
        converted = list(row)
        for index, processor in prepared.converters:
            converted[index] = processor(converted[index])
        return converted

    def fetch_one(
        self, conn: Connection, prepared: Prepared, values: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        row = self.fetch_row(conn, prepared, values)
        return None if row is None else dict(zip(prepared.keys, row, strict=True))

    def fetch_all(
        self, conn: Connection, prepared: Prepared, values: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """Every row of a prepared SELECT, converted, as dicts."""
        rows = self._call(conn, prepared.sql, prepared.parameters(values), _all_rows)
        found = []
        for row in rows:
            converted = self._converted(prepared, row)
            assert converted is not None
            found.append(dict(zip(prepared.keys, converted, strict=True)))
        return found


def _nothing(cursor: Any) -> None:
    return None


def _all_rows(cursor: Any) -> Any:
    return cursor.fetchall()


def _lastrowid(cursor: Any) -> Any:
    return cursor.lastrowid


def _first_value(cursor: Any) -> Any:
    return cursor.fetchone()[0]


def insert_statement(
    table: sa.Table, columns: tuple[str, ...], dialect: Dialect, returning: bool = True
) -> sa.Insert:
    """INSERT of `columns` from `v_`-named parameters, returning the new id (if asked).

    Columns left out get their scalar Python-side default (Core would apply it at
    execution time; here it travels as a parameter with its value).
    """
    values: dict[str, Any] = {c: sa.bindparam(f"v_{c}") for c in columns}
    for column in table.columns:
        default = column.default
        if (
            column.name not in values
            and isinstance(default, sa.ColumnDefault)
            and default.is_scalar
        ):
            values[column.name] = sa.bindparam(f"d_{column.name}", default.arg, column.type)
    statement = table.insert().values(values)
    if returning and adapter_of(dialect).returns_ids:
        statement = statement.returning(table.c.id)
    return statement


def values_of(row: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters for a statement from `insert_statement` / `update_statement`, from a
    row by column name (and `pk`, the id of the row an update changes)."""
    return {column if column == "pk" else f"v_{column}": value for column, value in row.items()}


def _column_of(parameter: str) -> str:
    """The key of a parameter in a row by column name (`values_of` reversed)."""
    return parameter[2:] if parameter.startswith("v_") else parameter


def update_statement(table: sa.Table, columns: tuple[str, ...]) -> sa.Update:
    """UPDATE `columns` of the row whose id is the parameter `pk`."""
    return (
        table.update()
        .where(table.c.id == sa.bindparam("pk"))
        .values({c: sa.bindparam(f"v_{c}") for c in columns})
    )
