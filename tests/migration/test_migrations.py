"""The Alembic migrations produce exactly the schema of the models."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Engine as DBEngine

from storage.db import make_engine
from storage.migrate import current, upgrade
from storage.models import metadata
from tests.conftest import database_settings


@pytest.fixture
def empty_db(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[DBEngine]:
    """A database with nothing in it, of its own (the other tests' schema stays intact)."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path}/migrated.db"
    else:
        url = request.getfixturevalue("pg_cluster").create_database(f"migration_{uuid.uuid4().hex}")
    engine = make_engine(database_settings(url))
    yield engine
    engine.dispose()


_EXPRESSION_INDEXES = {
    index.name
    for table in metadata.tables.values()
    for index in table.indexes
    if any(isinstance(e, sa.TextClause) for e in index.expressions)
}


def _without_expression_indexes() -> sa.MetaData:
    """The models' schema but for indexes on expressions, which Alembic cannot compare
    (it warns and skips them): the test below checks those by name instead."""
    copy = sa.MetaData()
    for original in metadata.tables.values():
        table = original.to_metadata(copy)
        for index in list(table.indexes):
            if index.name in _EXPRESSION_INDEXES:
                table.indexes.discard(index)
    return copy


def _compared(item: tuple[object, ...]) -> bool:
    return not (item[0] == "remove_index" and getattr(item[1], "name", None) in _EXPRESSION_INDEXES)


def test_migrations_match_the_models(empty_db: DBEngine) -> None:
    db = empty_db
    upgrade(db)
    with db.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = [d for d in compare_metadata(context, _without_expression_indexes()) if _compared(d)]
    assert diff == []
    assert current(db) is not None


def test_the_search_indexes_exist_where_their_database_takes_them(empty_db: DBEngine) -> None:
    """PostgreSQL gets the party-prefix and title-word indexes (pattern operators and
    pg_trgm's trigrams), from the migrations as from the models; SQLite none of them."""
    upgrade(empty_db)
    wanted = {
        "ix_contracts_client_id_prefix",
        "ix_contracts_freelancer_id_prefix",
        "ix_contracts_title_words",
    }
    with empty_db.connect() as conn:
        migrated = {index["name"] for index in sa.inspect(conn).get_indexes("contracts")}
    on_postgresql = empty_db.dialect.name == "postgresql"
    assert (wanted <= migrated) if on_postgresql else not (wanted & migrated)
    modelled = {i.name for i in metadata.tables["contracts"].indexes if i.name in wanted}
    assert modelled == wanted


def test_migrations_create_the_database_constraints(empty_db: DBEngine) -> None:
    db = empty_db
    upgrade(db)
    inspector = sa.inspect(db)
    for table in metadata.sorted_tables:
        model_checks = {c.name for c in table.constraints if isinstance(c, sa.CheckConstraint)}
        db_checks = {c["name"] for c in inspector.get_check_constraints(table.name)}
        assert model_checks <= db_checks, table.name
        # The expression indexes are PostgreSQL's alone (checked by name above).
        model_indexes = {i.name for i in table.indexes} - _EXPRESSION_INDEXES
        db_indexes = {i["name"] for i in inspector.get_indexes(table.name)}
        assert model_indexes <= db_indexes, table.name


def test_migrating_twice_is_harmless(empty_db: DBEngine) -> None:
    db = empty_db
    upgrade(db)
    upgrade(db)
    assert current(db) is not None
