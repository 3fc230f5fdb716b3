"""Alembic migrations, run programmatically (`escrowflow migrate`)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine

from storage.db import translated_errors

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Bring the database schema up to `revision` (default: the newest); the revisions
    before and after. Driver errors (a missing directory, a refused connection) come out
    as escrowflow errors."""
    with translated_errors():
        before = current(engine)
        command.upgrade(alembic_config(engine), revision)
        return before, current(engine)


def current(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def probe_write(engine: Engine) -> None:
    """Write the schema's revision row onto itself and commit: fails as a real write
    would (a full disk, a read-only file, a standby), changes nothing."""
    import sqlalchemy as sa

    from storage.db import transaction

    with transaction(engine) as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = version_num"))


def head() -> str | None:
    """The newest revision the migrations know."""
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config).get_current_head()
