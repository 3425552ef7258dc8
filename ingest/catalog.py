"""The catalog (sqlmodel): documents with their ACL, version and point ids, and ingestion jobs.

SQLite in the embedded default, PostgreSQL when ``CLEARANCE_DATABASE_URL`` points at one. The
catalog is the record the index is reconciled against, and the oracle tests compare reads to.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Field, Session, SQLModel, create_engine, select

from core.types import Acl


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class DocumentRow(SQLModel, table=True):
    __tablename__ = "documents"

    key: str = Field(primary_key=True)  # "{tenant}/{source}/{doc_id}"
    tenant: str = Field(index=True)
    source: str = Field(index=True)
    doc_id: str
    uri: str
    title: str = ""
    version: str = ""
    content_hash: str = ""
    acl_allow: str = "[]"  # JSON list of principals
    acl_deny: str = "[]"
    modified_at: datetime
    ingested_at: datetime
    # "indexed": point_ids are in the index; "writing": an update is in flight, and
    # pending_ids lists every id it may have written (for crash recovery).
    state: str = "indexed"
    point_ids: str = "[]"
    pending_ids: str = "[]"
    error_code: str | None = None
    error_message: str | None = None

    @property
    def acl(self) -> Acl:
        return Acl(frozenset(json.loads(self.acl_allow)), frozenset(json.loads(self.acl_deny)))

    @property
    def ids(self) -> list[str]:
        return list(json.loads(self.point_ids))


class JobRow(SQLModel, table=True):
    __tablename__ = "jobs"

    id: int | None = Field(default=None, primary_key=True)
    source: str
    kind: str = "sync"
    state: str = "running"  # running | done | failed
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    added: int = 0
    updated: int = 0
    acl_updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    failed: int = 0
    chunks: int = 0


class JobItemRow(SQLModel, table=True):
    __tablename__ = "job_items"

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(index=True)
    doc_key: str
    outcome: str  # added | updated | acl_updated | unchanged | deleted | failed
    chunks: int = 0
    duration_ms: float = 0.0
    error_code: str | None = None
    error_message: str | None = None


class Catalog:
    def __init__(self, url: str) -> None:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine = create_engine(url, pool_pre_ping=True)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        SQLModel.metadata.create_all(self.engine)

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def get(self, key: str) -> DocumentRow | None:
        with self.session() as s:
            return s.get(DocumentRow, key)

    def documents(self, tenant: str | None = None, source: str | None = None) -> Iterator[DocumentRow]:
        with self.session() as s:
            q = select(DocumentRow)
            if tenant is not None:
                q = q.where(DocumentRow.tenant == tenant)
            if source is not None:
                q = q.where(DocumentRow.source == source)
            yield from s.exec(q).all()

    def put(self, row: DocumentRow) -> None:
        with self.session() as s:
            s.merge(row)
            s.commit()

    def remove(self, key: str) -> None:
        with self.session() as s:
            row = s.get(DocumentRow, key)
            if row is not None:
                s.delete(row)
                s.commit()

    def start_job(self, source: str, kind: str = "sync") -> JobRow:
        with self.session() as s:
            job = JobRow(source=source, kind=kind)
            s.add(job)
            s.commit()
            s.refresh(job)
            return job

    def save_job(self, job: JobRow, items: list[JobItemRow]) -> None:
        with self.session() as s:
            s.merge(job)
            for it in items:
                s.add(it)
            s.commit()

    def job_items(self, job_id: int) -> list[JobItemRow]:
        with self.session() as s:
            return list(s.exec(select(JobItemRow).where(JobItemRow.job_id == job_id)).all())

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_conn: object, _record: object) -> None:
    cur = dbapi_conn.cursor()  # type: ignore[attr-defined]
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


def dumps(items: list[str] | frozenset[str]) -> str:
    return json.dumps(sorted(items))
