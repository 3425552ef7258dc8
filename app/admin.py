"""Operator reads (scope ``clearance:admin``): sources (registry and freshness), jobs, documents
with their status, "who saw document X since T", a document's ACL history (every change, by
whom) and "could principals P read document X at time T", answered from that history. Answers
are confined to the caller's tenant; catalog failures become ``BackendUnavailableError`` (503)
here, not in routes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.sources import SourceRegistry, SourceView, source_listing
from core.errors import NotFoundError
from core.types import Entitlements
from store.audit import AccessAt, AclChange, AuditLog, DocumentRead, WriteAudit
from store.catalog import Catalog, unavailable
from store.freshness import Freshness
from store.status import document_statuses, job_dicts


@dataclass(frozen=True)
class WhoSaw:
    reads: list[DocumentRead]

    @property
    def subjects(self) -> list[tuple[str, str]]:
        return sorted({(r.issuer, r.subject) for r in self.reads})


class AdminService:
    def __init__(self, catalog: Catalog, freshness: Freshness, audit: AuditLog, write_audit: WriteAudit,
                 sources: SourceRegistry) -> None:
        self._write_audit = write_audit
        self._sources = sources
        self._catalog = catalog
        self._freshness = freshness
        self._audit = audit

    def sources(self, caller: Entitlements) -> list[dict[str, Any]]:
        """Freshness of every source the catalog knows, with its registration (kind, root,
        writers; ``registered: false`` for a source only seen in old jobs or documents)."""
        return source_listing(self._freshness.statuses(), self._sources.all())

    def source(self, caller: Entitlements, name: str) -> dict[str, Any]:
        row = self._sources.get(name)
        if row is None:
            raise NotFoundError(f"unknown source {name!r}", code="unknown_source")
        status = next((s.as_dict() for s in self._freshness.statuses() if s.name == name), {})
        return {**status, **SourceView.of(row).as_dict(), "registered": True}

    def acl_history(self, caller: Entitlements, source: str, doc_id: str) -> list[AclChange]:
        """Every change of the document in the caller's tenant, oldest first."""
        return self._write_audit.acl_history(caller.tenant, source, doc_id)

    def access_at(self, caller: Entitlements, source: str, doc_id: str, principals: frozenset[str],
                  at: datetime) -> AccessAt:
        return self._write_audit.access_at(caller.tenant, source, doc_id, principals, at)

    def jobs(self, caller: Entitlements, source: str | None, limit: int) -> list[dict[str, Any]]:
        with unavailable("catalog"):
            return job_dicts(self._catalog, source=source, limit=limit)

    def documents(self, caller: Entitlements, source: str | None, state: str | None) -> list[dict[str, Any]]:
        with unavailable("catalog"):
            docs = document_statuses(self._catalog, caller.tenant, source=source)
        return [d for d in docs if state is None or d["status"] == state]

    def who_saw(self, caller: Entitlements, source: str, doc_id: str, since: datetime | None, limit: int) -> WhoSaw:
        """Every search hit and document read that handed out (chunks of) this document."""
        return WhoSaw(self._audit.document_reads(caller.tenant, source, doc_id, since=since, limit=limit))
