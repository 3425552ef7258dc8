"""Alembic environment for the catalog. Run through ``store.migrate`` (``clearance db upgrade``),
which hands over an open connection; there is no alembic.ini and nothing is read from the cwd."""

from __future__ import annotations

from alembic import context

from store.migrate import VERSION_TABLE, target_metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=target_metadata(),
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
    compare_type=True,
    transactional_ddl=connection.dialect.name == "postgresql",
)
with context.begin_transaction():
    context.run_migrations()
