"""Catalog schema migrations (Alembic; revisions in ``store/migrations/versions``, shipped inside
the package, so no alembic.ini and nothing in the working directory is needed).

The schema is only ever made by revisions, never by ``create_all``: a new database gets every
revision, a 0.1.0 catalog (tables made by ``create_all``, no version table) gets the baseline's
missing tables and the later revisions with its rows intact, and tests/unit/test_migrations.py
fails when a model changes without a revision that makes the same change.

Who migrates (``Settings.auto_migrate()``): with ``db.auto_migrate`` on (the default for the
embedded SQLite catalog) opening the catalog upgrades it. With it off (PostgreSQL, where several
processes share one database) `clearance db upgrade` runs once per release (compose: the
``migrate`` service) and every process only checks, refusing an out-of-date or newer schema; a
database without any table is still initialised, since there is nothing to lose. Concurrent
upgrades serialise on a lock (PostgreSQL advisory lock; a lock file next to a SQLite database).
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, inspect, text
from sqlalchemy.engine import Connection, Engine

from core.errors import ConfigError

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "clearance_schema_version"
# Any table of the 0.1.0 catalog: present without a version table means "made by create_all".
_LEGACY_MARKER = "documents"
_PG_LOCK_KEY = 0x636C_6561_7261_6E63  # "clearanc": one advisory lock for schema changes


class SchemaError(ConfigError):
    """The catalog's schema is not the one this release runs on."""

    code = "catalog_schema"


@dataclass(frozen=True)
class SchemaState:
    current: str | None  # None: no version table (empty, or a 0.1.0 catalog)
    head: str
    legacy: bool  # tables of a catalog made before migrations existed
    empty: bool  # no table at all

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def target_metadata() -> MetaData:
    """The models' tables (what a fully upgraded catalog must equal)."""
    from sqlmodel import SQLModel

    import store.catalog  # noqa: F401  (registers the tables)
    import store.connectors  # noqa: F401
    import store.directory  # noqa: F401
    import store.queue  # noqa: F401

    return SQLModel.metadata


def _config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def state(engine: Engine) -> SchemaState:
    with engine.connect() as conn:
        return _state(conn)


def _state(conn: Connection) -> SchemaState:
    with _quiet():  # Alembic logs its context at INFO every time one is made: noise on every start
        current = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()
    tables = set(inspect(conn).get_table_names())
    return SchemaState(current=current, head=head_revision(), legacy=current is None and _LEGACY_MARKER in tables,
                       empty=not tables)


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Upgrade to ``revision``; returns (revision before, revision after)."""
    from alembic import command

    with _migration_lock(engine), engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
            conn.commit()
        try:
            before = _state(conn).current
            command.upgrade(_config(conn), revision)
            conn.commit()
            return before, _state(conn).current or ""
        finally:
            if conn.dialect.name == "postgresql":
                conn.rollback()
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
                conn.commit()


def prepare(engine: Engine, *, auto_migrate: bool) -> None:
    """Bring the catalog to this release's schema, or check that it is there (see the module)."""
    st = state(engine)
    if st.up_to_date:
        return
    if auto_migrate or st.empty:
        upgrade(engine)
        return
    where = engine.url.render_as_string(hide_password=True)
    if st.current is not None and st.current not in _known_revisions():
        raise SchemaError(f"the catalog at {where} has schema revision {st.current}, newer than this release "
                          f"knows (head {st.head}): run the release that wrote it, or restore a backup")
    have = st.current or ("0.1.0 (before migrations)" if st.legacy else "none")
    raise SchemaError(f"the catalog at {where} has schema revision {have}; this release needs {st.head}: "
                      "run `clearance db upgrade` (or set CLEARANCE_DB__AUTO_MIGRATE=true)")


def _known_revisions() -> set[str]:
    return {s.revision for s in ScriptDirectory.from_config(_config()).walk_revisions()}


@contextmanager
def _quiet() -> Iterator[None]:
    log = logging.getLogger("alembic.runtime.migration")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """Processes on one machine opening one SQLite catalog upgrade it one at a time."""
    db = engine.url.database if engine.dialect.name == "sqlite" else None
    if not db or db == ":memory:":
        yield
        return
    lock_path = Path(db).with_name(Path(db).name + ".migrate-lock")
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def new_revision(message: str) -> str:
    """Developers: write the next revision, autogenerated from the difference between the
    current head and the models (review it; then tests/unit/test_migrations.py must pass):
    ``python -m store.migrate "what changed"``."""
    import tempfile

    from alembic import command
    from sqlalchemy import create_engine

    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite:///{tmp}/head.sqlite3")
        try:
            upgrade(engine)
            rev_id = f"{int(head_revision()) + 1:04d}"
            slug = "_".join(message.lower().split())[:40]
            with engine.connect() as conn:
                script = command.revision(_config(conn), message=message, autogenerate=True, rev_id=rev_id)
        finally:
            engine.dispose()
    path = Path(script.path) if script is not None and not isinstance(script, list) else None  # type: ignore[union-attr]
    if path is not None and path.name != f"{rev_id}_{slug}.py":
        path = path.rename(path.with_name(f"{rev_id}_{slug}.py"))
    return str(path)


if __name__ == "__main__":
    import sys

    print(new_revision(" ".join(sys.argv[1:]) or "schema change"))
