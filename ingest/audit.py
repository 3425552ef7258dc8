"""The audit trail in the catalog: write, prune, export, and "who saw document X since T".

Invariants:

- ``record`` writes the event and one ``audit_documents`` row per document handed out in one
  transaction, or raises ``BackendUnavailableError``; the API writes before it answers, so an
  answer that could not be audited is never served.
- Query text is stored only as an HMAC (``core.audit``) unless ``audit.store_raw_query`` is on.
- Events older than ``audit.retention_days`` are deleted at startup and then at most once per
  ``audit.prune_interval_s``, piggybacking on writes (no background thread to own).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Iterator

from sqlalchemy import Table, func, insert
from sqlmodel import col, delete, select

from core.audit import AuditEvent, principals_hash, query_hash
from core.settings import AuditSettings
from ingest.catalog import AuditDocumentRow, AuditEventRow, Catalog, as_utc, aware_utc, unavailable, utcnow

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
            event_id = int(conn.execute(insert(EVENTS).values(**row)).inserted_primary_key[0])
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
