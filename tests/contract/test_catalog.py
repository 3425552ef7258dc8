"""The catalog contract on SQLite and on the PostgreSQL at 127.0.0.1:5432 (database ``test``),
each test in a schema of its own so concurrent runs never collide."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from store.catalog import Catalog, DocumentRow, JobItemRow

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _pg_available() -> bool:
    try:
        with create_engine(PG).connect() as c:
            c.execute(text("select 1"))
        return True
    except Exception:
        return False


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Catalog]:
    if request.param == "sqlite":
        cat = Catalog(f"sqlite:///{tmp_path / 'catalog.sqlite3'}")
        yield cat
        cat.close()
        return
    if not _pg_available():
        pytest.fail("PostgreSQL at 127.0.0.1:5432 is required for the catalog contract")
    schema = f"t_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG)
    with admin.begin() as c:
        c.execute(text(f"create schema {schema}"))
    cat = Catalog(f"{PG}?options=-csearch_path%3D{schema}")
    yield cat
    cat.close()
    with admin.begin() as c:
        c.execute(text(f"drop schema {schema} cascade"))
    admin.dispose()


def row(key: str = "acme/s/a.md", **kw: object) -> DocumentRow:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    base: dict[str, object] = dict(key=key, tenant="acme", source="s", doc_id=key.split("/", 2)[2], uri="file:///a.md",
                                   modified_at=now, ingested_at=now, acl_allow=json.dumps(["group:a"]),
                                   point_ids=json.dumps(["p1", "p2"]))
    base.update(kw)
    return DocumentRow(**base)  # type: ignore[arg-type]


def test_put_get_roundtrip_keeps_acl_and_ids(catalog: Catalog) -> None:
    catalog.put(row())
    got = catalog.get("acme/s/a.md")
    assert got is not None and got.acl.allow == frozenset({"group:a"}) and got.ids == ["p1", "p2"]
    assert got.modified_at.replace(tzinfo=UTC) == datetime(2026, 1, 1, tzinfo=UTC)


def test_put_replaces_and_remove_deletes(catalog: Catalog) -> None:
    catalog.put(row())
    catalog.put(row(point_ids=json.dumps(["p3"]), state="writing"))
    got = catalog.get("acme/s/a.md")
    assert got is not None and got.ids == ["p3"] and got.state == "writing"
    catalog.remove("acme/s/a.md")
    assert catalog.get("acme/s/a.md") is None
    catalog.remove("acme/s/a.md")  # idempotent


def test_documents_filter_by_tenant_and_source(catalog: Catalog) -> None:
    catalog.put(row("acme/s/a.md"))
    catalog.put(row("acme/t/b.md", source="t"))
    catalog.put(row("globex/s/c.md", tenant="globex"))
    assert {r.key for r in catalog.documents("acme")} == {"acme/s/a.md", "acme/t/b.md"}
    assert {r.key for r in catalog.documents("acme", "t")} == {"acme/t/b.md"}
    assert len(list(catalog.documents())) == 3


def test_jobs_record_items_with_error_codes(catalog: Catalog) -> None:
    job = catalog.start_job("s")
    assert job.id is not None and job.state == "running"
    job.state, job.failed = "done", 1
    catalog.save_job(job, [JobItemRow(job_id=job.id, doc_key="acme/s/x", outcome="failed", error_code="empty_file",
                                      error_message="file is empty"),
                           JobItemRow(job_id=job.id, doc_key="acme/s/y", outcome="added", chunks=3)])
    items = catalog.job_items(job.id)
    assert {(i.doc_key, i.outcome, i.error_code) for i in items} == {("acme/s/x", "failed", "empty_file"), ("acme/s/y", "added", None)}
