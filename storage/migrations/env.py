"""Alembic environment: the engine is handed in by storage.migrate (no URL in a file)."""

from alembic import context

from storage.dialect import adapter_of
from storage.models import metadata

engine = context.config.attributes["engine"]

with engine.connect() as connection:
    # SQLite cannot ALTER most things in place: batch mode copies the table instead.
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=adapter_of(connection).alters_by_copy,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
