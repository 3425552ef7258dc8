"""The catalog (sqlmodel): documents with their ACL, version and point ids, and ingestion jobs.

SQLite in the embedded default, PostgreSQL when ``CLEARANCE_DATABASE_URL`` points at one. The
catalog is the record the index is reconciled against, and the oracle tests compare reads to.

It also holds the operational record: ``sources`` (last sync or push per source, the root of a
filesystem source), the source registry (``source_registry``: the sources that exist, their kind,
root and writer principals; ``app.writes`` refuses writes to any other source), the audit trail
(``audit_events``, ``audit_documents`` for reads and ``write_events`` for writes; see
``store.audit``) and ``clearance_meta`` (deployment-wide values such as the audit salt).
Timestamps are aware UTC datetimes (sqlmodel stores them as UTC on SQLite and PostgreSQL).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from sqlalchemy import Index, event, func, text
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Field, Session, SQLModel, col, create_engine, select

from core.errors import BackendUnavailableError, ConflictError
from core.types import Acl


def utcnow() -> datetime:
    return datetime.now(UTC)


class DocState(StrEnum):
    """A document row's state. ``INDEXED``: its ``point_ids`` are in the index. ``WRITING``: an
    update is in flight and ``pending_ids`` lists every id it may have written, for recovery."""

    INDEXED = "indexed"
    WRITING = "writing"


class JobState(StrEnum):
    """``INTERRUPTED``: the process that ran the job died (killed, crashed) while it was
    ``running``; the next sync, worker or server on its host notices and records when
    (``finished_at``; ``Catalog.interrupt_orphaned_jobs``)."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


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
    state: str = DocState.INDEXED  # a DocState
    point_ids: str = "[]"
    pending_ids: str = "[]"
    error_code: str | None = None
    error_message: str | None = None
    metadata_json: str = "{}"  # the pushed metadata (JSON object of strings), also in the payload

    @property
    def metadata_dict(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in json.loads(self.metadata_json or "{}").items()}

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
    state: str = JobState.RUNNING  # a JobState
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    added: int = 0
    updated: int = 0
    acl_updated: int = 0
    metadata_updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    failed: int = 0
    chunks: int = 0
    # The process running the job (``JobOwner``); None for queued jobs, which workers run.
    owner_host: str | None = None
    owner_pid: int | None = None
    owner_started: float | None = None  # the process's start time (epoch s): a reused pid differs


class JobItemRow(SQLModel, table=True):
    __tablename__ = "job_items"

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(index=True)
    doc_key: str
    outcome: str  # added | updated | acl_updated | metadata_updated | unchanged | deleted | failed
    chunks: int = 0
    duration_ms: float = 0.0
    error_code: str | None = None
    error_message: str | None = None


@dataclass(frozen=True)
class JobOwner:
    """The process that runs a job: host name, pid and the process's start time."""

    host: str
    pid: int
    started: float | None

    @staticmethod
    def current() -> JobOwner:
        return JobOwner(socket.gethostname(), os.getpid(), process_started(os.getpid()))


def process_started(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds, from ``/proc``); None when it does not exist
    or the platform has no ``/proc`` (then only the pid is compared)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/stat") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return btime + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return False


def owner_alive(pid: int, started: float | None) -> bool:
    """Whether the process ``pid`` that started at ``started`` still runs (on this host). A zombie
    counts as gone, and so does a pid now held by a process started at another time."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    if _zombie(pid):
        return False
    now = process_started(pid)
    return started is None or now is None or abs(now - started) < 2.0


def as_utc(dt: datetime) -> datetime:
    """``dt`` as an aware UTC datetime; naive input is taken to be UTC already."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def aware_utc(dt: datetime | None) -> datetime | None:
    return None if dt is None else as_utc(dt)


class SourceRow(SQLModel, table=True):
    """Last contact per source: a sync job (filesystem, with its root) or a push."""

    __tablename__ = "sources"

    name: str = Field(primary_key=True)
    kind: str = "push"  # filesystem | push
    root: str | None = None  # the folder a filesystem source was synced from (for resync)
    last_attempt_at: datetime | None = None
    last_success_at: datetime | None = None
    last_error: str | None = None
    last_job_id: int | None = None


class SourceRegistryRow(SQLModel, table=True):
    """A source that exists: created by an admin (or the operator's local CLI), never implicitly
    by a write. ``writers`` are the principals whose callers may write it (with
    ``clearance:ingest``); ``root`` is the folder of a filesystem source."""

    __tablename__ = "source_registry"

    name: str = Field(primary_key=True)
    tenant: str
    kind: str = "push"  # push | filesystem
    root: str | None = None
    writers: str = "[]"  # JSON list of principals
    created_at: datetime = Field(default_factory=utcnow)
    created_by: str = ""  # "<issuer> <subject>" of the admin who created it

    @property
    def writer_set(self) -> frozenset[str]:
        return frozenset(json.loads(self.writers))


class WriteEventRow(SQLModel, table=True):
    """One write, or one refused write (``store.audit.WriteAudit`` defines every field).

    Document changes are inserted in the same transaction as the catalog row they describe, so
    a change is never committed without its event nor an event without its change."""

    __tablename__ = "write_events"
    __table_args__ = (Index("ix_write_events_doc", "tenant", "source", "doc_id", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(index=True)
    request_id: str = ""
    tenant: str
    issuer: str
    subject: str
    principals_hash: str
    action: str  # put | patch_acl | delete | sync | resync | queue | source_create | source_update | source_delete | recover
    outcome: str  # added | updated | acl_updated | metadata_updated | unchanged | deleted | done | refused | ...
    status: int = 200
    code: str | None = None  # the error code of a refusal
    source: str = ""
    doc_id: str | None = None  # None: an event about a request, a job or a source as a whole
    job_id: int | None = None
    acl_before: str | None = None  # JSON {"allow", "deny"}; None: no document before
    acl_after: str | None = None  # None: no document after
    acl_before_fp: str | None = None  # core.audit.acl_fingerprint
    acl_after_fp: str | None = None
    content_before: str | None = None  # SHA-256 of the content
    content_after: str | None = None
    detail: str = "{}"  # JSON: counts, path, writers, message


class AuditEventRow(SQLModel, table=True):
    """One search or document read (``core.audit`` defines every digest in it)."""

    __tablename__ = "audit_events"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(index=True)
    request_id: str = ""
    action: str  # search | document
    status: int = 200
    issuer: str
    subject: str
    tenant: str
    principals_hash: str
    query_hash: str | None = None
    query_text: str | None = None  # only with audit.store_raw_query
    params: str = "{}"  # JSON: mode, top_k, filters; source and doc_id for a document read
    chunks: str = "[]"  # JSON list of {id, source, doc_id, version, acl}
    acl_version: str | None = None
    latency_ms: float = 0.0
    degraded: bool = False
    stale_sources: str = "[]"


class AuditDocumentRow(SQLModel, table=True):
    """One row per (event, document) handed out: answers "who saw document X since T"."""

    __tablename__ = "audit_documents"
    __table_args__ = (Index("ix_audit_documents_doc", "tenant", "source", "doc_id", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    event_id: int = Field(index=True)
    at: datetime
    tenant: str
    source: str
    doc_id: str
    version: str = ""
    acl: str = ""  # ACL fingerprint of the chunks returned
    chunks: int = 0


class MetaRow(SQLModel, table=True):
    __tablename__ = "clearance_meta"

    key: str = Field(primary_key=True)
    value: str


class Catalog:
    def __init__(self, url: str, *, auto_migrate: bool = True) -> None:
        """Open the catalog at ``url``. Its schema comes from the migrations (``store.migrate``):
        upgraded here when ``auto_migrate``, else only checked (``SchemaError`` when it is not
        this release's; an empty database is still initialised)."""
        from store.migrate import prepare

        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine = create_engine(url, pool_pre_ping=True)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            prepare(self.engine, auto_migrate=auto_migrate)
        except BaseException:
            self.engine.dispose()
            raise
        self._writers = threading.RLock()

    @contextmanager
    def write_lock(self, keys: Iterable[str]) -> Iterator[None]:
        """Serialise writers of the same documents for the whole read-row → index → row update.

        Without it a PATCH racing a PUT of the same document could leave the index with an ACL
        the catalog no longer holds (a revoked group still reading the new chunks; found by the
        leak duel). In this process one lock covers every writer (the write phase is short:
        parsing and embedding happen before it); across processes on PostgreSQL, advisory locks
        per document, taken in sorted order so two writers of overlapping batches cannot deadlock.
        SQLite deployments are one process (the Edge shard has one owner).
        """
        with self._writers:
            if self.engine.dialect.name != "postgresql":
                yield
                return
            ids = sorted({int.from_bytes(hashlib.sha256(k.encode()).digest()[:8], "big", signed=True) for k in keys})
            with unavailable("catalog"), self.engine.connect() as conn:
                for i in ids:
                    conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": i})
                conn.commit()
                try:
                    yield
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock_all()"))
                    conn.commit()

    @contextmanager
    def quiesce(self) -> Iterator[None]:
        """Hold off every writer in this process (all of them go through ``write_lock``) until
        the block ends: a backup copies the catalog and the index at one instant."""
        with self._writers:
            yield

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def get(self, key: str) -> DocumentRow | None:
        with self.session() as s:
            return s.get(DocumentRow, key)

    def get_many(self, keys: list[str]) -> dict[str, DocumentRow]:
        with self.session() as s:
            rows = s.exec(select(DocumentRow).where(col(DocumentRow.key).in_(keys))).all() if keys else []
            return {r.key: r for r in rows}

    def documents(self, tenant: str | None = None, source: str | None = None) -> Iterator[DocumentRow]:
        with self.session() as s:
            q = select(DocumentRow)
            if tenant is not None:
                q = q.where(DocumentRow.tenant == tenant)
            if source is not None:
                q = q.where(DocumentRow.source == source)
            yield from s.exec(q).all()

    def put(self, row: DocumentRow) -> None:
        self.put_many([row])

    def put_many(self, rows: list[DocumentRow], journal: Iterable[SQLModel] = ()) -> None:
        """One transaction for all rows: a batch of documents costs one commit, not one each.
        ``journal`` rows (write events) are inserted in the same transaction."""
        with self.session() as s:
            for row in rows:
                s.merge(row)
            for entry in journal:
                s.add(entry)
            s.commit()

    def remove(self, key: str, journal: Iterable[SQLModel] = ()) -> None:
        with self.session() as s:
            row = s.get(DocumentRow, key)
            if row is not None:
                s.delete(row)
            for entry in journal:
                s.add(entry)
            s.commit()

    def tenants(self) -> set[str]:
        """Every tenant the catalog holds documents of."""
        with self.session() as s:
            return {str(t) for t in s.exec(select(DocumentRow.tenant).distinct()).all()}

    # -- source registry ------------------------------------------------------------------
    def source(self, name: str) -> SourceRegistryRow | None:
        with self.session() as s:
            return s.get(SourceRegistryRow, name)

    def registered_sources(self) -> list[SourceRegistryRow]:
        with self.session() as s:
            return list(s.exec(select(SourceRegistryRow).order_by(SourceRegistryRow.name)).all())

    def create_source(self, row: SourceRegistryRow, journal: Iterable[SQLModel] = ()) -> None:
        """Insert a new source (``ConflictError`` ``source_exists`` when the name is taken) and
        mark its operational row with its kind and root."""
        try:
            with self.session() as s:
                s.add(row)
                op = s.get(SourceRow, row.name) or SourceRow(name=row.name)
                op.kind, op.root = row.kind, row.root
                s.add(op)
                for entry in journal:
                    s.add(entry)
                s.commit()
        except IntegrityError as exc:
            raise ConflictError(f"source {row.name!r} already exists", code="source_exists") from exc

    def save_source(self, row: SourceRegistryRow, journal: Iterable[SQLModel] = ()) -> None:
        with self.session() as s:
            s.merge(row)
            for entry in journal:
                s.add(entry)
            s.commit()

    def remove_source(self, name: str, journal: Iterable[SQLModel] = ()) -> None:
        """Forget a source: its registry entry and operational row (its documents must be gone)."""
        with self.session() as s:
            for model in (SourceRegistryRow, SourceRow):
                row = s.get(model, name)
                if row is not None:
                    s.delete(row)
            for entry in journal:
                s.add(entry)
            s.commit()

    def start_job(self, source: str, kind: str = "sync", *, owner: JobOwner | None = None) -> JobRow:
        """A new ``running`` job; ``owner`` (the running process) lets a later process tell that
        it died (``interrupt_orphaned_jobs``)."""
        with self.session() as s:
            job = JobRow(source=source, kind=kind)
            if owner is not None:
                job.owner_host, job.owner_pid, job.owner_started = owner.host, owner.pid, owner.started
            s.add(job)
            s.commit()
            s.refresh(job)
            return job

    def interrupt_orphaned_jobs(self) -> list[int]:
        """Mark ``interrupted`` (finished now) every ``running`` job whose owner ran on this host
        and is gone: its pid is not alive, or was reused by a process started at another time.
        Jobs of other hosts, and jobs without an owner (queued), are left alone. Returns their ids."""
        me = JobOwner.current()
        done: list[int] = []
        with self.session() as s:
            q = select(JobRow).where(JobRow.state == JobState.RUNNING, JobRow.owner_host == me.host,
                                     col(JobRow.owner_pid).is_not(None))
            now = utcnow()
            for job in s.exec(q).all():
                if job.owner_pid is None or owner_alive(job.owner_pid, job.owner_started):
                    continue
                job.state, job.finished_at = JobState.INTERRUPTED, now
                s.add(job)
                done.append(int(job.id or 0))
            if done:
                s.commit()
        return done

    def save_job(self, job: JobRow, items: list[JobItemRow]) -> None:
        with self.session() as s:
            s.merge(job)
            for it in items:
                s.add(it)
            s.commit()

    def job_items(self, job_id: int) -> list[JobItemRow]:
        with self.session() as s:
            return list(s.exec(select(JobItemRow).where(JobItemRow.job_id == job_id)).all())

    # -- operations -----------------------------------------------------------------------
    def ping(self) -> None:
        """``SELECT 1``; raises ``BackendUnavailableError`` when the database cannot answer."""
        with unavailable("catalog"), self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def record_sync(self, name: str, *, job_id: int | None, ok: bool, root: str | None = None,
                    error: str | None = None, at: datetime | None = None) -> None:
        """A sync job of ``name`` ended; a root marks it a filesystem source (resync reads it)."""
        at = as_utc(at or utcnow())
        with self.session() as s:
            row = s.get(SourceRow, name) or SourceRow(name=name, kind="sync")
            if root is not None:
                row.kind, row.root = "filesystem", root
            row.last_attempt_at, row.last_job_id = at, job_id
            if ok:
                row.last_success_at, row.last_error = at, None
            else:
                row.last_error = (error or "failed")[:1000]
            s.add(row)
            s.commit()

    def record_push(self, name: str, at: datetime | None = None) -> None:
        """A system of record pushed to ``name`` successfully (its freshness clock restarts)."""
        at = as_utc(at or utcnow())
        for attempt in range(2):  # two first pushes may race to create the row
            try:
                with self.session() as s:
                    row = s.get(SourceRow, name) or SourceRow(name=name, kind="push")
                    row.last_attempt_at = row.last_success_at = at
                    row.last_error = None
                    s.add(row)
                    s.commit()
                return
            except IntegrityError:
                if attempt:
                    raise

    def source_rows(self) -> list[SourceRow]:
        with self.session() as s:
            return list(s.exec(select(SourceRow).order_by(SourceRow.name)).all())

    def source_row(self, name: str) -> SourceRow | None:
        with self.session() as s:
            return s.get(SourceRow, name)

    def last_success(self, names: set[str] | None = None) -> dict[str, datetime]:
        """Last successful sync or push per source (UTC), from ``sources`` and, for sources
        synced before that table existed, the finished ``jobs``."""
        out: dict[str, datetime] = {}
        with self.session() as s:
            q1 = select(SourceRow.name, SourceRow.last_success_at).where(col(SourceRow.last_success_at).is_not(None))
            q2 = select(JobRow.source, func.max(JobRow.finished_at)).where(JobRow.state == JobState.DONE).group_by(JobRow.source)
            if names is not None:
                q1 = q1.where(col(SourceRow.name).in_(sorted(names)))
                q2 = q2.where(col(JobRow.source).in_(sorted(names)))
            for name, at in [*s.exec(q1).all(), *s.exec(q2).all()]:
                when = aware_utc(at)
                if when is not None and (name not in out or when > out[name]):
                    out[name] = when
        return out

    def document_counts(self) -> dict[str, dict[str, int]]:
        """Per source: documents by state."""
        out: dict[str, dict[str, int]] = {}
        with self.session() as s:
            q = select(DocumentRow.source, DocumentRow.state, func.count()).group_by(DocumentRow.source, DocumentRow.state)
            for source, state, n in s.exec(q).all():
                out.setdefault(source, {})[state] = int(n)
        return out

    def jobs(self, source: str | None = None, limit: int = 50) -> list[JobRow]:
        """Most recent first."""
        with self.session() as s:
            q = select(JobRow).order_by(col(JobRow.id).desc()).limit(limit)
            if source is not None:
                q = q.where(JobRow.source == source)
            return list(s.exec(q).all())

    def failed_items(self, job_ids: list[int]) -> list[JobItemRow]:
        if not job_ids:
            return []
        with self.session() as s:
            q = select(JobItemRow).where(col(JobItemRow.job_id).in_(job_ids), JobItemRow.outcome == "failed")
            return list(s.exec(q.order_by(col(JobItemRow.id))).all())

    def meta_value(self, key: str, default: str) -> str:
        """The stored value of ``key``, storing ``default`` first when there is none (the first
        writer wins when several processes race)."""
        with self.session() as s:
            row = s.get(MetaRow, key)
            if row is not None:
                return row.value
        try:
            with self.session() as s:
                s.add(MetaRow(key=key, value=default))
                s.commit()
            return default
        except IntegrityError:
            with self.session() as s:
                row = s.get(MetaRow, key)
                assert row is not None
                return row.value

    def close(self) -> None:
        self.engine.dispose()


@contextmanager
def unavailable(what: str) -> Iterator[None]:
    """Turns database errors into ``BackendUnavailableError`` (503, Retry-After) at the catalog
    boundary of read paths, so a dead catalog is a clean refusal rather than a crash."""
    try:
        yield
    except SQLAlchemyError as exc:
        raise BackendUnavailableError(f"{what} unavailable: {type(exc).__name__}", code="catalog_unavailable") from exc


_WAL_SWITCH_S = 30.0


def _sqlite_pragmas(dbapi_conn: object, _record: object) -> None:
    cur = dbapi_conn.cursor()  # type: ignore[attr-defined]
    try:
        cur.execute("PRAGMA busy_timeout=5000")
        _switch_to_wal(cur)
        cur.execute("PRAGMA synchronous=NORMAL")
    finally:
        cur.close()


def _switch_to_wal(cur: sqlite3.Cursor) -> None:
    # Switching a new database to WAL answers "database is locked" at once, without the busy
    # handler, while another connection is opening it (four first opens of one new catalog did,
    # about one time in forty): retry for a bounded time, then let the error name itself.
    deadline = time.monotonic() + _WAL_SWITCH_S
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def dumps(items: list[str] | frozenset[str]) -> str:
    return json.dumps(sorted(items))
