"""A work queue in the catalog for ingestion workers (``clearance worker``).

Invariant: a queued item is held by at most one worker at a time. Claims are one atomic
statement: on PostgreSQL ``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED)``, so
concurrent workers skip each other's rows instead of waiting or double-claiming; on SQLite the
single UPDATE runs under SQLite's database write lock. A claim is a lease: a worker that dies
releases its items when the lease expires, and an item that keeps failing is given up after
``max_attempts`` with its last error recorded.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy import and_, func, or_, update
from sqlalchemy import select as sa_select
from sqlmodel import Field, SQLModel, select

from core.types import Acl
from store.catalog import Catalog, dumps, utcnow


class QueueState(StrEnum):
    QUEUED = "queued"
    LEASED = "leased"
    DONE = "done"
    FAILED = "failed"


class QueueRow(SQLModel, table=True):
    __tablename__ = "queue"

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(index=True)
    op: str = "upsert"  # upsert | delete
    source: str
    doc_id: str
    path: str = ""  # where a worker reads the bytes (filesystem sources)
    acl_allow: str = "[]"
    acl_deny: str = "[]"
    state: str = Field(default=QueueState.QUEUED, index=True)  # a QueueState
    lease_owner: str | None = None
    lease_until: datetime | None = None
    attempts: int = 0
    outcome: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    enqueued_at: datetime = Field(default_factory=utcnow)

    @property
    def acl(self) -> Acl:
        return Acl(frozenset(json.loads(self.acl_allow)), frozenset(json.loads(self.acl_deny)))


@dataclass(frozen=True)
class Enqueued:
    op: str
    doc_id: str
    path: str = ""
    acl: Acl = Acl()


class WorkQueue:
    def __init__(self, catalog: Catalog, *, max_attempts: int = 3) -> None:
        self.catalog = catalog
        self.max_attempts = max_attempts
        # the table comes from the catalog's migrations (store/migrations), like every other
        self._pg = catalog.engine.dialect.name == "postgresql"

    def enqueue(self, job_id: int, source: str, items: Sequence[Enqueued]) -> int:
        with self.catalog.session() as s:
            for it in items:
                s.add(QueueRow(job_id=job_id, op=it.op, source=source, doc_id=it.doc_id, path=it.path,
                               acl_allow=dumps(it.acl.allow), acl_deny=dumps(it.acl.deny)))
            s.commit()
        return len(items)

    def claim(self, worker: str, n: int, lease_s: float) -> list[QueueRow]:
        """Lease up to ``n`` items; each claim gets a token of its own, so no two claims share rows."""
        now = datetime.now(UTC)
        token = f"{worker}:{uuid.uuid4().hex[:12]}"
        t = QueueRow.__table__  # type: ignore[attr-defined]
        claimable = and_(or_(t.c.state == QueueState.QUEUED, and_(t.c.state == QueueState.LEASED, t.c.lease_until < now)),
                         t.c.attempts < self.max_attempts)
        # FOR UPDATE SKIP LOCKED on PostgreSQL; SQLite compiles it away and serialises writers.
        ids = sa_select(t.c.id).where(claimable).order_by(t.c.id).limit(n).with_for_update(skip_locked=True)
        stmt = (update(t).where(t.c.id.in_(ids.scalar_subquery()))
                .values(state=QueueState.LEASED, lease_owner=token, lease_until=now + timedelta(seconds=lease_s),
                        attempts=t.c.attempts + 1))
        give_up = (update(t).where(t.c.state == QueueState.LEASED, t.c.lease_until < now, t.c.attempts >= self.max_attempts)
                   .values(state=QueueState.FAILED, lease_owner=None, error_code=func.coalesce(t.c.error_code, "gave_up")))
        with self.catalog.engine.begin() as conn:
            conn.execute(give_up)
            conn.execute(stmt)
        with self.catalog.session() as s:
            return list(s.exec(select(QueueRow).where(QueueRow.lease_owner == token, QueueRow.state == QueueState.LEASED)).all())

    def finish(self, row: QueueRow, *, outcome: str | None = None, error: tuple[str, str] | None = None) -> bool:
        """Record the result if this claim still holds the lease; False if it lost it."""
        with self.catalog.session() as s:
            current = s.get(QueueRow, row.id)
            if current is None or current.lease_owner != row.lease_owner or current.state != QueueState.LEASED:
                return False
            if error is None:
                current.state, current.outcome = QueueState.DONE, outcome
            else:
                code, message = error
                retry = current.attempts < self.max_attempts and code in RETRYABLE
                current.state = QueueState.QUEUED if retry else QueueState.FAILED
                current.error_code, current.error_message = code, message[:1000]
            current.lease_owner, current.lease_until = None, None
            s.add(current)
            s.commit()
            return True

    def counts(self, job_id: int | None = None) -> dict[str, int]:
        with self.catalog.session() as s:
            q = select(QueueRow)
            if job_id is not None:
                q = q.where(QueueRow.job_id == job_id)
            out: dict[str, int] = {}
            for r in s.exec(q).all():
                out[r.state] = out.get(r.state, 0) + 1
            return out


# Failures worth another attempt: the environment, not the document.
RETRYABLE = frozenset({"embed_failed", "backend_unavailable", "parse_killed", "parse_timeout"})

