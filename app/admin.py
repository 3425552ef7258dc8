"""Operator reads (scope ``clearance:admin``): sources and their freshness, jobs, documents with
their status, and "who saw document X since T". Answers are confined to the caller's tenant;
catalog failures become ``BackendUnavailableError`` (503) here, not in routes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.types import Entitlements
from store.audit import AuditLog, DocumentRead
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
    def __init__(self, catalog: Catalog, freshness: Freshness, audit: AuditLog) -> None:
        self._catalog = catalog
        self._freshness = freshness
        self._audit = audit

    def sources(self, caller: Entitlements) -> list[dict[str, Any]]:
        return [s.as_dict() for s in self._freshness.statuses()]

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
