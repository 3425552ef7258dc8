"""Catalog migrations (store/migrations) on SQLite and on the PostgreSQL at 127.0.0.1:5432.

- A catalog made by the previous release (0.1.0, ``create_all``; tests/fixtures/catalog) is
  upgraded with every row intact, through the same code `clearance db upgrade` runs.
- After the migrations, the schema equals the models' exactly: a model change without a revision
  that makes the same change fails here.
- With ``db.auto_migrate`` off a process refuses an old or newer schema with a clear message; an
  empty database is still initialised; concurrent first opens do not collide.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, create_engine, inspect, select, text
from sqlalchemy.engine import Engine

from store import migrate
from store.catalog import Catalog
from store.queue import WorkQueue
from tests.conftest import REPO
from tests.contract.test_catalog import PG, _pg_available

FIXTURES = REPO / "tests" / "fixtures" / "catalog"
SQLITE_FIXTURE = FIXTURES / "v0_1_0.sqlite3"
PG_DDL = FIXTURES / "v0_1_0.postgresql.sql"


def fixture_rows() -> dict[str, list[dict[str, Any]]]:
    """Every row of the 0.1.0 fixture, table by table, as SQLAlchemy reads them."""
    with tempfile.TemporaryDirectory() as tmp:  # never open the committed file itself (WAL sidecars)
        copy = Path(tmp) / "catalog.sqlite3"
        shutil.copy(SQLITE_FIXTURE, copy)
        eng = create_engine(f"sqlite:///{copy}")
        meta = MetaData()
        meta.reflect(eng)
        with eng.connect() as c:
            out = {t.name: [dict(r._mapping) for r in c.execute(select(t).order_by(*t.primary_key.columns))]
                   for t in meta.sorted_tables}
        eng.dispose()
    return out


def rows_now(engine: Engine, tables: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """The same tables and columns, read back from ``engine``; datetimes as aware UTC."""
    meta = MetaData()
    meta.reflect(engine)
    out = {}
    with engine.connect() as c:
        for name, before in tables.items():
            t = meta.tables[name]
            cols = [t.c[k] for k in (before[0] if before else {})]
            rows = [dict(r._mapping) for r in c.execute(select(*cols).order_by(*t.primary_key.columns))] if cols else []
            out[name] = [{k: _utc(v) for k, v in r.items()} for r in rows]
    return out


def _utc(v: Any) -> Any:
    return (v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)) if isinstance(v, datetime) else v


def schema_diff(engine: Engine) -> list[Any]:
    with engine.connect() as c:
        mc = MigrationContext.configure(c, opts={"compare_type": True, "version_table": migrate.VERSION_TABLE})
        return [d for d in compare_metadata(mc, migrate.target_metadata())]


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A schema of its own on the test database (URL with search_path)."""
    if not _pg_available():
        pytest.fail("PostgreSQL at 127.0.0.1:5432 is required for the migration tests")
    schema = f"m_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG)
    with admin.begin() as c:
        c.execute(text(f"create schema {schema}"))
    yield f"{PG}?options=-csearch_path%3D{schema}"
    with admin.begin() as c:
        c.execute(text(f"drop schema {schema} cascade"))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def legacy_catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A 0.1.0 catalog with rows: the committed SQLite file, or on PostgreSQL that release's DDL
    filled with the same rows."""
    if request.param == "sqlite":
        db = tmp_path / "catalog.sqlite3"
        shutil.copy(SQLITE_FIXTURE, db)
        yield f"sqlite:///{db}"
        return
    url = request.getfixturevalue("pg_schema")
    eng = create_engine(url)
    rows = fixture_rows()
    with eng.begin() as c:
        ddl = "\n".join(line for line in PG_DDL.read_text().splitlines() if not line.startswith("--"))
        for stmt in [s for s in ddl.split(";") if s.strip()]:
            c.execute(text(stmt))
        meta = MetaData()
        meta.reflect(c)
        for t in meta.sorted_tables:
            if rows.get(t.name):
                c.execute(t.insert(), [{k: _utc(v) for k, v in r.items()} for r in rows[t.name]])
        for t in meta.sorted_tables:  # serial ids continue after the copied rows
            if "id" in t.c:
                c.execute(text(f"SELECT setval(pg_get_serial_sequence('{t.name}', 'id'), "
                               f"COALESCE((SELECT max(id) FROM {t.name}), 0) + 1, false)"))
    eng.dispose()
    yield url


def test_fixture_is_a_0_1_0_catalog(legacy_catalog: str) -> None:
    eng = create_engine(legacy_catalog)
    st = migrate.state(eng)
    assert st.current is None and st.legacy and not st.empty
    assert "source_registry" not in inspect(eng).get_table_names()
    eng.dispose()


def test_upgrade_keeps_every_row_of_a_0_1_0_catalog(legacy_catalog: str) -> None:
    before = fixture_rows()
    assert sum(map(len, before.values())) >= 12 and all(before[t] for t in ("documents", "jobs", "queue", "audit_events"))
    eng = create_engine(legacy_catalog)
    assert migrate.upgrade(eng) == (None, migrate.head_revision())
    assert rows_now(eng, before) == {k: [{c: _utc(v) for c, v in r.items()} for r in rows] for k, rows in before.items()}
    assert schema_diff(eng) == [], "the upgraded 0.1.0 catalog differs from the models"
    with eng.connect() as c:  # columns this release added got their defaults on the old rows
        assert {r[0] for r in c.execute(text("SELECT metadata_json FROM documents"))} == {"{}"}
        assert {r[0] for r in c.execute(text("SELECT metadata_updated FROM jobs"))} == {0}
    assert migrate.upgrade(eng) == (migrate.head_revision(), migrate.head_revision())  # idempotent
    eng.dispose()

    cat = Catalog(legacy_catalog, auto_migrate=False)  # up to date: opens without migrating
    try:
        doc = cat.get("acme/demo/doc1.md")
        assert doc is not None and doc.acl.deny == frozenset({"user:alice"}) and doc.ids == ["00000000-0000-0000-0000-000000000001"]
        assert doc.metadata_json == "{}"
        assert [r.name for r in cat.source_rows()] == ["demo", "wiki"]
        assert cat.source_row("demo").root == "/srv/demo"  # type: ignore[union-attr]
        assert cat.meta_value("audit.query_salt", "new") == "00ff" * 8
        assert cat.jobs()[-1].added == 3 and len(cat.job_items(cat.jobs()[-1].id)) == 3  # type: ignore[arg-type]
        assert WorkQueue(cat).counts() == {"queued": 2}
        claimed = WorkQueue(cat).claim("w", 10, 60)
        assert sorted(r.doc_id for r in claimed) == ["a.txt", "b.txt"]
    finally:
        cat.close()


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_a_new_database_gets_exactly_the_models_schema(dialect: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = f"sqlite:///{tmp_path / 'c.sqlite3'}" if dialect == "sqlite" else request.getfixturevalue("pg_schema")
    cat = Catalog(url)  # the migration path, never create_all
    try:
        assert migrate.state(cat.engine).up_to_date
        assert schema_diff(cat.engine) == []
    finally:
        cat.close()


def test_auto_migrate_off_refuses_old_and_newer_schemas(tmp_path: Path) -> None:
    db = tmp_path / "catalog.sqlite3"
    shutil.copy(SQLITE_FIXTURE, db)
    url = f"sqlite:///{db}"
    with pytest.raises(migrate.SchemaError, match=r"0\.1\.0 \(before migrations\).*clearance db upgrade"):
        Catalog(url, auto_migrate=False)
    Catalog(url, auto_migrate=True).close()
    with sqlite3.connect(db) as c:
        c.execute(f"UPDATE {migrate.VERSION_TABLE} SET version_num = '9999'")
    with pytest.raises(migrate.SchemaError, match="newer than this release"):
        Catalog(url, auto_migrate=False)
    # a database with nothing in it is initialised even without auto-migration
    fresh = Catalog(f"sqlite:///{tmp_path / 'new.sqlite3'}", auto_migrate=False)
    assert migrate.state(fresh.engine).up_to_date
    fresh.close()


def test_downgrade_and_upgrade_again_keep_rows(tmp_path: Path) -> None:
    from alembic import command

    db = tmp_path / "catalog.sqlite3"
    shutil.copy(SQLITE_FIXTURE, db)
    eng = create_engine(f"sqlite:///{db}")
    migrate.upgrade(eng)
    with eng.begin() as c:
        command.downgrade(migrate._config(c), "0001")
    assert migrate.state(eng).current == "0001" and "write_events" not in inspect(eng).get_table_names()
    migrate.upgrade(eng)
    before = fixture_rows()
    assert rows_now(eng, before)["documents"] == [{k: _utc(v) for k, v in r.items()} for r in before["documents"]]
    eng.dispose()


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_concurrent_first_opens_do_not_collide(dialect: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    # Several rounds on SQLite: switching a new file to WAL raced about one first open in forty.
    rounds = 25 if dialect == "sqlite" else 1
    for n in range(rounds):
        url = f"sqlite:///{tmp_path / f'c{n}.sqlite3'}" if dialect == "sqlite" else request.getfixturevalue("pg_schema")
        errors: list[BaseException] = []
        barrier = threading.Barrier(4)

        def open_it(url: str = url, errors: list[BaseException] = errors, barrier: threading.Barrier = barrier) -> None:
            try:
                barrier.wait()
                Catalog(url).close()
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=open_it) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, (n, errors)
        eng = create_engine(url)
        assert migrate.state(eng).up_to_date
        eng.dispose()


def test_cli_db_upgrade_and_status(tmp_path: Path) -> None:
    data = tmp_path / "var"
    data.mkdir()
    shutil.copy(SQLITE_FIXTURE, data / "catalog.sqlite3")
    env = {"CLEARANCE_STORAGE__DATA_DIR": str(data), "PATH": "/usr/bin:/bin"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", "from cli.main import run; run()", *args], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=120)

    status = cli("db", "status")
    assert status.returncode == 1 and "0.1.0 (before migrations)" in status.stdout
    up = cli("db", "upgrade")
    assert up.returncode == 0, up.stderr
    assert f"upgraded from nothing (new or 0.1.0) to {migrate.head_revision()}" in up.stdout
    assert cli("db", "status").returncode == 0
    assert "already at revision" in cli("db", "upgrade").stdout
