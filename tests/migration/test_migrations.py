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


def test_migrations_match_the_models(empty_db: DBEngine) -> None:
    db = empty_db
    upgrade(db)
    with db.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), metadata
        )
    assert diff == []
    assert current(db) is not None


def test_migrations_create_the_database_constraints(empty_db: DBEngine) -> None:
    db = empty_db
    upgrade(db)
    inspector = sa.inspect(db)
    for table in metadata.sorted_tables:
        model_checks = {c.name for c in table.constraints if isinstance(c, sa.CheckConstraint)}
        db_checks = {c["name"] for c in inspector.get_check_constraints(table.name)}
        assert model_checks <= db_checks, table.name
        model_indexes = {i.name for i in table.indexes}
        db_indexes = {i["name"] for i in inspector.get_indexes(table.name)}
        assert model_indexes <= db_indexes, table.name


def test_migrating_twice_is_harmless(empty_db: DBEngine) -> None:
    db = empty_db
    upgrade(db)
    upgrade(db)
    assert current(db) is not None
