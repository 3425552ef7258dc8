"""Search and document reads with the audit trail, source freshness and metrics around them.

Invariants:

- An answer is returned only after its audit event is stored. When the event cannot be
  written (catalog down) the request fails with 503 ``catalog_unavailable`` and nothing is
  served: "who saw what" has no gaps.
- A read that fails after authentication (404 for a document the caller may not see, 422,
  503, …) is audited too, with its status and no chunks; best effort, since the failure may
  be the catalog itself.
- ``stale_sources`` lists every source, among those the answer holds chunks of, that is
  beyond its freshness SLA (``ingest.freshness``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from core.audit import AuditAction, AuditEvent
from core.errors import ClearanceError
from core.logging import Log, current_request_id
from core.metrics import Metrics
from core.types import Scope, SearchMode
from ingest.audit import AuditLog
from ingest.freshness import Freshness, SourceStatus
from retrieval.service import SearchResult, SearchService

log = Log("clearance.reads")


@dataclass(frozen=True)
class AuditedSearch:
    result: SearchResult
    stale: list[SourceStatus]


class AuditedReads:
    def __init__(self, search: SearchService, audit: AuditLog, freshness: Freshness, metrics: Metrics) -> None:
        self._search = search
        self._audit = audit
        self._freshness = freshness
        self._metrics = metrics

    def search(self, scope: Scope, query: str, *, top_k: int, mode: SearchMode, explain: bool,
               params: dict[str, Any]) -> AuditedSearch:
        t0 = time.perf_counter()
        params = {**params, "mode": mode, "top_k": top_k}
        try:
            res = self._search.search(scope, query, top_k=top_k, mode=mode, explain=explain)
            stale = self._freshness.stale({str(h.provenance.get("source")) for h in res.hits})
        except ClearanceError as exc:
            self._record_failure("search", scope, query, params, exc, t0)
            raise
        for leg, ms in res.legs_ms.items():
            self._metrics.search_seconds.labels(leg).observe(ms / 1000)
        self._metrics.search_results.observe(len(res.hits))
        if res.degraded:
            self._metrics.search_degraded.labels("embedder_failed").inc()
        params["effective_mode"] = res.mode
        self._record(AuditEvent(
            at=_now(), request_id=current_request_id() or "", action="search", status=200,
            issuer=scope.entitlements.issuer, subject=scope.entitlements.subject, tenant=scope.entitlements.tenant,
            principals=scope.entitlements.principals, query=query.strip(), params=params,
            chunks=tuple(h.seen() for h in res.hits), latency_ms=(time.perf_counter() - t0) * 1000,
            degraded=res.degraded, stale_sources=tuple(s.name for s in stale),
        ))
        log.info("search.done", hits=len(res.hits), mode=res.mode, degraded=res.degraded, took_ms=round(res.took_ms, 3),
                 stale_sources=len(stale))
        return AuditedSearch(res, stale)

    def document(self, scope: Scope, source: str, doc_id: str) -> tuple[dict[str, Any], list[SourceStatus]]:
        t0 = time.perf_counter()
        params = {"source": source, "doc_id": doc_id}
        try:
            view = self._search.read_document(scope, source, doc_id)
            stale = self._freshness.stale({source})
        except ClearanceError as exc:
            self._record_failure("document", scope, None, params, exc, t0)
            raise
        self._record(AuditEvent(
            at=_now(), request_id=current_request_id() or "", action="document", status=200,
            issuer=scope.entitlements.issuer, subject=scope.entitlements.subject, tenant=scope.entitlements.tenant,
            principals=scope.entitlements.principals, query=None, params=params, chunks=tuple(view.seen),
            latency_ms=(time.perf_counter() - t0) * 1000, stale_sources=tuple(s.name for s in stale),
        ))
        return view.body, stale

    def _record(self, ev: AuditEvent) -> None:
        try:
            self._audit.record(ev)
        except ClearanceError:
            self._metrics.audit_failures.inc()
            log.error("audit.write_failed", action=ev.action)
            raise
        self._metrics.audit_events.labels(ev.action).inc()

    def _record_failure(self, action: AuditAction, scope: Scope, query: str | None, params: dict[str, Any],
                        exc: ClearanceError, t0: float) -> None:
        ev = AuditEvent(
            at=_now(), request_id=current_request_id() or "", action=action, status=exc.status,
            issuer=scope.entitlements.issuer, subject=scope.entitlements.subject, tenant=scope.entitlements.tenant,
            principals=scope.entitlements.principals, query=query.strip() if query is not None else None,
            params={**params, "error": exc.code}, chunks=(), latency_ms=(time.perf_counter() - t0) * 1000,
        )
        try:
            self._record(ev)
        except ClearanceError:
            pass  # already counted and logged; the original error is what the caller gets


def _now() -> datetime:
    return datetime.now(timezone.utc)

