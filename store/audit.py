"""The audit trail in the catalog: reads (who saw what) and writes (who changed what).

Reads: record, prune, export, and "who saw document X since T" (``AuditLog``).
Writes (``WriteAudit``, table ``write_events``): every caller-requested write, every document
change a write makes, and every refused write, with the caller (issuer, subject, principals
hash), the source, document, action, ACL before and after (full and fingerprinted), content
hash before and after, and the job id; ACL history and "could P read document X at T" are
answered from it.

Invariants:

- ``record`` writes the event and one ``audit_documents`` row per document handed out in one
  transaction, or raises ``BackendUnavailableError``; the API writes before it answers, so an
  answer that could not be audited is never served.
- Query text is stored only as an HMAC (``core.audit``) unless ``audit.store_raw_query`` is on.
- Events older than ``audit.retention_days`` are deleted at startup and then at most once per
  ``audit.prune_interval_s``, piggybacking on writes (no background thread to own).
- A document change's write event is built by ``change_event`` and committed by the writer in
  the transaction that commits the change (``ingest.writer``), so a change is never stored
  without its event. Who asked is taken from ``write_context`` (set by ``app.writes`` around
  each request; the worker and recovery run as ``SYSTEM``). Write events are not pruned: they
  are the ACL history.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, func, insert
from sqlmodel import col, delete, select

from core.audit import AuditEvent, acl_fingerprint, principals_hash, query_hash
from core.settings import AuditSettings
from core.types import Acl
from store.catalog import (
    AuditDocumentRow,
    AuditEventRow,
    Catalog,
    DocumentRow,
    WriteEventRow,
    as_utc,
    aware_utc,
    unavailable,
    utcnow,
)

SALT_KEY = "audit.query_salt"
EVENTS: Table = AuditEventRow.__table__  # type: ignore[attr-defined]
DOCUMENTS: Table = AuditDocumentRow.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class DocumentRead:
    """One time a document was handed out (by a search hit or a document read)."""

    at: datetime
    event_id: int
    request_id: str
    action: str
    issuer: str
    subject: str
    principals_hash: str
    version: str
    acl: str
    chunks: int

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "event_id": self.event_id, "request_id": self.request_id,
                "action": self.action, "issuer": self.issuer, "subject": self.subject,
                "principals_hash": self.principals_hash, "version": self.version, "acl": self.acl,
                "chunks": self.chunks}


class AuditLog:
    def __init__(self, settings: AuditSettings, catalog: Catalog, *, prune_on_start: bool = True) -> None:
        self.settings = settings
        self.catalog = catalog
        self._salt: bytes | None = None
        self._prune_lock = threading.Lock()
        self._last_prune = float("-inf")
        if settings.enabled and prune_on_start:
            self.prune()

    @property
    def salt(self) -> bytes:
        if self._salt is None:
            configured = self.settings.query_salt.get_secret_value() if self.settings.query_salt else ""
            with unavailable("audit store"):
                value = configured or self.catalog.meta_value(SALT_KEY, secrets.token_hex(32))
            self._salt = value.encode("utf-8")
        return self._salt

    def hash_query(self, query: str) -> str:
        return query_hash(self.salt, query.strip())

    # -- write ----------------------------------------------------------------------------
    def record(self, ev: AuditEvent) -> int | None:
        """Store one event; returns its id (None when auditing is off)."""
        if not self.settings.enabled:
            return None
        at = as_utc(ev.at)
        query = ev.query.strip() if ev.query is not None else None  # as searched
        row = dict(
            at=at, request_id=ev.request_id, action=ev.action, status=ev.status, issuer=ev.issuer,
            subject=ev.subject, tenant=ev.tenant, principals_hash=principals_hash(ev.principals),
            query_hash=self.hash_query(query) if query is not None else None,
            query_text=query if self.settings.store_raw_query else None,
            params=json.dumps(ev.params, sort_keys=True, default=str),
            chunks=json.dumps([c.as_dict() for c in ev.chunks]), acl_version=ev.acl_version,
            latency_ms=round(ev.latency_ms, 3), degraded=ev.degraded, stale_sources=json.dumps(list(ev.stale_sources)),
        )
        docs: dict[tuple[str, str], dict[str, Any]] = {}
        for c in ev.chunks:
            d = docs.setdefault((c.source, c.doc_id), dict(at=at, tenant=ev.tenant, source=c.source, doc_id=c.doc_id,
                                                           version=c.version, acl=c.acl, chunks=0))
            d["chunks"] += 1
        # Core inserts in one transaction: this runs on every read, and the ORM's unit of work
        # costs more than the SQL itself.
        with unavailable("audit store"), self.catalog.engine.begin() as conn:
            key = conn.execute(insert(EVENTS).values(**row)).inserted_primary_key
            assert key is not None
            event_id = int(key[0])
            if docs:
                conn.execute(insert(DOCUMENTS), [{**d, "event_id": event_id} for d in docs.values()])
        self._maybe_prune()
        return event_id

    # -- retention ------------------------------------------------------------------------
    def prune(self, now: datetime | None = None) -> int:
        """Delete events older than the retention; returns how many events went."""
        cutoff = as_utc((now or utcnow()) - timedelta(days=self.settings.retention_days))
        with self._prune_lock:
            self._last_prune = time.monotonic()
            with unavailable("audit store"), self.catalog.session() as s:
                s.exec(delete(AuditDocumentRow).where(col(AuditDocumentRow.at) < cutoff))
                gone = s.exec(delete(AuditEventRow).where(col(AuditEventRow.at) < cutoff))
                s.commit()
                return int(gone.rowcount or 0)

    def _maybe_prune(self) -> None:
        if time.monotonic() - self._last_prune >= self.settings.prune_interval_s:
            self.prune()

    # -- read -----------------------------------------------------------------------------
    def export(self, since: datetime | None = None, until: datetime | None = None,
               batch: int = 1000) -> Iterator[dict[str, Any]]:
        """Events in id order as plain dicts (one JSONL line each), read in batches."""
        last = 0
        while True:
            with unavailable("audit store"), self.catalog.session() as s:
                q = select(AuditEventRow).where(col(AuditEventRow.id) > last)
                if since is not None:
                    q = q.where(col(AuditEventRow.at) >= as_utc(since))
                if until is not None:
                    q = q.where(col(AuditEventRow.at) < as_utc(until))
                rows = list(s.exec(q.order_by(col(AuditEventRow.id)).limit(batch)).all())
            if not rows:
                return
            for r in rows:
                yield event_dict(r)
            last = int(rows[-1].id or 0)

    def document_reads(self, tenant: str, source: str, doc_id: str, since: datetime | None = None,
                       limit: int = 1000) -> list[DocumentRead]:
        """Who was handed (chunks of) this document, oldest first."""
        with unavailable("audit store"), self.catalog.session() as s:
            q = (select(AuditDocumentRow, AuditEventRow)
                 .join(AuditEventRow, col(AuditEventRow.id) == col(AuditDocumentRow.event_id))
                 .where(AuditDocumentRow.tenant == tenant, AuditDocumentRow.source == source,
                        AuditDocumentRow.doc_id == doc_id))
            if since is not None:
                q = q.where(col(AuditDocumentRow.at) >= as_utc(since))
            rows = s.exec(q.order_by(col(AuditDocumentRow.at), col(AuditDocumentRow.id)).limit(limit)).all()
        return [DocumentRead(at=aware_utc(d.at) or d.at, event_id=e.id or 0, request_id=e.request_id, action=e.action,
                             issuer=e.issuer, subject=e.subject, principals_hash=e.principals_hash, version=d.version,
                             acl=d.acl, chunks=d.chunks) for d, e in rows]

    def count(self) -> int:
        with unavailable("audit store"), self.catalog.session() as s:
            return int(s.exec(select(func.count()).select_from(AuditEventRow)).one())


def event_dict(r: AuditEventRow) -> dict[str, Any]:
    at = aware_utc(r.at)
    return {
        "id": r.id, "at": at.isoformat() if at else None, "request_id": r.request_id, "action": r.action,
        "status": r.status, "issuer": r.issuer, "subject": r.subject, "tenant": r.tenant,
        "principals_hash": r.principals_hash, "query_hash": r.query_hash, "query": r.query_text,
        "params": json.loads(r.params), "chunks": json.loads(r.chunks), "acl_version": r.acl_version,
        "latency_ms": r.latency_ms, "degraded": r.degraded, "stale_sources": json.loads(r.stale_sources),
    }


# -- writes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WriteActor:
    """Who asked for a write, as the write audit records it (never the raw principals)."""

    issuer: str
    subject: str
    principals_hash: str
    tenant: str  # the caller's tenant (the event's ``tenant`` is the one written to)


SYSTEM = WriteActor(issuer="clearance", subject="system", principals_hash="", tenant="")


@dataclass
class WriteContext:
    actor: WriteActor
    action: str
    request_id: str = ""
    job_id: int | None = None
    tenant: str = ""


_CONTEXT: ContextVar[WriteContext | None] = ContextVar("clearance_write_context", default=None)


@contextmanager
def write_context(actor: WriteActor, action: str, *, request_id: str = "", tenant: str = "") -> Iterator[WriteContext]:
    """Attribute every document change made inside the block to ``actor`` and ``action``."""
    ctx = WriteContext(actor, action, request_id, None, tenant)
    token = _CONTEXT.set(ctx)
    try:
        yield ctx
    finally:
        _CONTEXT.reset(token)


def current_write_context() -> WriteContext | None:
    return _CONTEXT.get()


def set_job(job_id: int | None) -> None:
    """Record the job the changes of the current context belong to (a sync starts its job late)."""
    ctx = _CONTEXT.get()
    if ctx is not None:
        ctx.job_id = job_id


def _acl_json(acl: Acl | None) -> str | None:
    return None if acl is None else json.dumps(acl.as_dict(), sort_keys=True)


def _acl_fp(acl: Acl | None) -> str | None:
    return None if acl is None else acl_fingerprint(acl.allow, acl.deny)


def change_event(outcome: str, *, tenant: str, source: str, doc_id: str, before: DocumentRow | None,
                 after: DocumentRow | None, detail: Mapping[str, Any] | None = None) -> WriteEventRow:
    """The write event of one document change, attributed to the current ``write_context``
    (``SYSTEM`` outside one). ``before``/``after`` are the catalog rows around the change
    (None: the document did not exist / no longer exists)."""
    ctx = _CONTEXT.get()
    actor = ctx.actor if ctx is not None else SYSTEM
    acl_b = before.acl if before is not None else None
    acl_a = after.acl if after is not None else None
    return WriteEventRow(
        at=utcnow(), request_id=ctx.request_id if ctx else "", tenant=tenant, issuer=actor.issuer,
        subject=actor.subject, principals_hash=actor.principals_hash, action=ctx.action if ctx else "system",
        outcome=outcome, status=200, source=source, doc_id=doc_id, job_id=ctx.job_id if ctx else None,
        acl_before=_acl_json(acl_b), acl_after=_acl_json(acl_a), acl_before_fp=_acl_fp(acl_b),
        acl_after_fp=_acl_fp(acl_a), content_before=(before.content_hash or None) if before else None,
        content_after=(after.content_hash or None) if after else None,
        detail=json.dumps(dict(detail or {}), sort_keys=True, default=str),
    )


@dataclass(frozen=True)
class AclChange:
    """One entry of a document's ACL history."""

    at: datetime
    event_id: int
    action: str
    outcome: str
    issuer: str
    subject: str
    principals_hash: str
    request_id: str
    job_id: int | None
    acl_before: Acl | None
    acl_after: Acl | None
    acl_before_fp: str | None
    acl_after_fp: str | None
    content_before: str | None
    content_after: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(), "event_id": self.event_id, "action": self.action, "outcome": self.outcome,
            "issuer": self.issuer, "subject": self.subject, "principals_hash": self.principals_hash,
            "request_id": self.request_id, "job_id": self.job_id,
            "acl_before": self.acl_before.as_dict() if self.acl_before is not None else None,
            "acl_after": self.acl_after.as_dict() if self.acl_after is not None else None,
            "acl_before_fp": self.acl_before_fp, "acl_after_fp": self.acl_after_fp,
            "content_before": self.content_before, "content_after": self.content_after,
        }


@dataclass(frozen=True)
class AccessAt:
    """Whether a set of principals could read one document at one time, from its ACL history."""

    readable: bool
    existed: bool
    acl: Acl | None
    since: AclChange | None  # the change that set the ACL in force at that time
    granted_by: list[str] = field(default_factory=list)
    denied_by: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"readable": self.readable, "existed": self.existed,
                "acl": self.acl.as_dict() if self.acl is not None else None,
                "since": self.since.as_dict() if self.since is not None else None,
                "granted_by": self.granted_by, "denied_by": self.denied_by}


class WriteAudit:
    """The write audit trail (``write_events``)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def record(self, *, actor: WriteActor, action: str, outcome: str, tenant: str, source: str = "",
               doc_id: str | None = None, status: int = 200, code: str | None = None, request_id: str = "",
               job_id: int | None = None, before: Acl | None = None, after: Acl | None = None,
               detail: Mapping[str, Any] | None = None) -> int:
        """Store one request-level event (a refusal, a job, a source change, an unchanged PUT);
        raises ``BackendUnavailableError`` when it cannot be stored."""
        row = WriteEventRow(
            at=utcnow(), request_id=request_id, tenant=tenant, issuer=actor.issuer, subject=actor.subject,
            principals_hash=actor.principals_hash, action=action, outcome=outcome, status=status, code=code,
            source=source, doc_id=doc_id, job_id=job_id, acl_before=_acl_json(before), acl_after=_acl_json(after),
            acl_before_fp=_acl_fp(before), acl_after_fp=_acl_fp(after),
            detail=json.dumps(dict(detail or {}), sort_keys=True, default=str),
        )
        with unavailable("audit store"), self.catalog.session() as s:
            s.add(row)
            s.commit()
            s.refresh(row)
            return int(row.id or 0)

    def export(self, since: datetime | None = None, until: datetime | None = None,
               batch: int = 1000) -> Iterator[dict[str, Any]]:
        """Write events in id order as plain dicts (one JSONL line each)."""
        last = 0
        while True:
            with unavailable("audit store"), self.catalog.session() as s:
                q = select(WriteEventRow).where(col(WriteEventRow.id) > last)
                if since is not None:
                    q = q.where(col(WriteEventRow.at) >= as_utc(since))
                if until is not None:
                    q = q.where(col(WriteEventRow.at) < as_utc(until))
                rows = list(s.exec(q.order_by(col(WriteEventRow.id)).limit(batch)).all())
            if not rows:
                return
            for r in rows:
                yield write_event_dict(r)
            last = int(rows[-1].id or 0)

    def events(self, *, request_id: str | None = None, source: str | None = None,
               limit: int = 10_000) -> list[dict[str, Any]]:
        with unavailable("audit store"), self.catalog.session() as s:
            q = select(WriteEventRow)
            if request_id is not None:
                q = q.where(WriteEventRow.request_id == request_id)
            if source is not None:
                q = q.where(WriteEventRow.source == source)
            return [write_event_dict(r) for r in s.exec(q.order_by(col(WriteEventRow.id)).limit(limit)).all()]

    def acl_history(self, tenant: str, source: str, doc_id: str, until: datetime | None = None) -> list[AclChange]:
        """Every change of this document (content, ACL, metadata, delete), oldest first."""
        with unavailable("audit store"), self.catalog.session() as s:
            q = select(WriteEventRow).where(WriteEventRow.tenant == tenant, WriteEventRow.source == source,
                                            WriteEventRow.doc_id == doc_id, WriteEventRow.status == 200)
            if until is not None:
                q = q.where(col(WriteEventRow.at) <= as_utc(until))
            rows = s.exec(q.order_by(col(WriteEventRow.at), col(WriteEventRow.id))).all()
        return [_change(r) for r in rows if r.outcome != "unchanged"]

    def access_at(self, tenant: str, source: str, doc_id: str, principals: frozenset[str], at: datetime) -> AccessAt:
        """Could a caller holding ``principals`` read this document at ``at``? The ACL in force is
        the one the last change at or before ``at`` left (none: the document did not exist)."""
        history = self.acl_history(tenant, source, doc_id, until=at)
        if not history or history[-1].acl_after is None:
            return AccessAt(False, False, None, history[-1] if history else None)
        last = history[-1]
        acl = last.acl_after
        assert acl is not None
        granted = sorted(acl.allow & principals)
        denied = sorted(acl.deny & principals)
        return AccessAt(bool(granted) and not denied, True, acl, last, granted, denied)


def _acl_from(raw: str | None) -> Acl | None:
    if raw is None:
        return None
    d = json.loads(raw)
    return Acl(frozenset(d.get("allow", [])), frozenset(d.get("deny", [])))


def _change(r: WriteEventRow) -> AclChange:
    return AclChange(
        at=aware_utc(r.at) or r.at, event_id=int(r.id or 0), action=r.action, outcome=r.outcome, issuer=r.issuer,
        subject=r.subject, principals_hash=r.principals_hash, request_id=r.request_id, job_id=r.job_id,
        acl_before=_acl_from(r.acl_before), acl_after=_acl_from(r.acl_after), acl_before_fp=r.acl_before_fp,
        acl_after_fp=r.acl_after_fp, content_before=r.content_before, content_after=r.content_after,
    )


def write_event_dict(r: WriteEventRow) -> dict[str, Any]:
    at = aware_utc(r.at)
    return {
        "kind": "write", "id": r.id, "at": at.isoformat() if at else None, "request_id": r.request_id,
        "tenant": r.tenant, "issuer": r.issuer, "subject": r.subject, "principals_hash": r.principals_hash,
        "action": r.action, "outcome": r.outcome, "status": r.status, "code": r.code, "source": r.source,
        "doc_id": r.doc_id, "job_id": r.job_id,
        "acl_before": json.loads(r.acl_before) if r.acl_before is not None else None,
        "acl_after": json.loads(r.acl_after) if r.acl_after is not None else None,
        "acl_before_fp": r.acl_before_fp, "acl_after_fp": r.acl_after_fp,
        "content_before": r.content_before, "content_after": r.content_after, "detail": json.loads(r.detail),
    }
