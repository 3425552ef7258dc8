"""Search and document reads with the audit trail, source freshness and metrics around them.

Invariants:

- An answer is returned only after its audit event is stored. When the event cannot be
  written (catalog down) the request fails with 503 ``catalog_unavailable`` and nothing is
  served: "who saw what" has no gaps.
- A read that fails after authentication (404 for a document the caller may not see, 422,
  503, …) is audited too, with its status and no chunks; best effort, since the failure may
  be the catalog itself.
- ``stale_sources`` lists every source, among those the answer holds chunks of, that is
  beyond its freshness SLA (``store.freshness``).
- Paged searches: ``next_cursor`` is signed with the deployment's cursor key and bound to the
  caller's principals and to the query with every parameter that shapes the ranking
  (``retrieval.cursor``); a cursor replayed by another caller or for another query is a 422
  ``invalid_cursor`` (audited like any failed read), and a page never repeats an item an earlier
  page of the same cursor chain handed out.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from auth.authenticator import ADMIN, Authenticator
from core.audit import AuditAction, AuditEvent
from core.errors import ClearanceError, PermissionDeniedError
from core.logging import Log, current_request_id
from core.metrics import Metrics
from core.types import Entitlements, Scope, SearchMode
from retrieval.cursor import Cursor, CursorCodec, caller_binding, query_binding
from retrieval.scope_filter import MetadataFilter
from retrieval.service import GroupBy, SearchResult, SearchService
from store.audit import AuditLog
from store.freshness import Freshness, SourceStatus

log = Log("clearance.reads")


@dataclass(frozen=True)
class AuditedSearch:
    result: SearchResult
    stale: list[SourceStatus]
    next_cursor: str | None = None


class AuditedReads:
    def __init__(self, search: SearchService, audit: AuditLog, freshness: Freshness, metrics: Metrics,
                 cursors: CursorCodec | None = None) -> None:
        # Without a deployment key (tests), cursors are valid for this process only.
        self._cursors = cursors or CursorCodec(os.urandom(32))
        self._search = search
        self._audit = audit
        self._freshness = freshness
        self._metrics = metrics

    def search(self, scope: Scope, query: str, *, top_k: int, mode: SearchMode, explain: bool,
               params: dict[str, Any], group_by: GroupBy = "chunk", chunks_per_document: int = 3,
               cursor: str | None = None, metadata: tuple[MetadataFilter, ...] = ()) -> AuditedSearch:
        """``params`` are the caller's filters as sent (they are audited and, with ``mode`` and the
        grouping, bind a page cursor to this query)."""
        t0 = time.perf_counter()
        shape = {k: v for k, v in params.items() if k != "explain"}
        shape.update(mode=mode, group_by=group_by,
                     chunks_per_document=chunks_per_document if group_by == "document" else None)
        params = {**params, "mode": mode, "top_k": top_k}
        if group_by != "chunk":
            params.update(group_by=group_by, chunks_per_document=chunks_per_document)
        if cursor is not None:
            params["page"] = "next"
        who, what = caller_binding(scope.entitlements), query_binding(query, shape)
        try:
            prev: Cursor | None = None
            if cursor is not None:
                prev = self._cursors.decode(cursor, caller=who, query=what)
            res = self._search.search(scope, query, top_k=top_k, mode=mode, explain=explain, group_by=group_by,
                                      chunks_per_document=chunks_per_document,
                                      seen=prev.seen if prev else frozenset(), metadata=metadata)
            stale = self._freshness.stale({h.source for h in res.hits})
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
        nxt = self._cursors.next(prev, who, what, res.handed_out()) if res.more else None
        return AuditedSearch(res, stale, self._cursors.encode(nxt) if nxt is not None else None)

    def search_as(self, admin: Entitlements, scope: Scope, query: str, *, top_k: int, mode: SearchMode,
                  explain: bool, params: dict[str, Any], group_by: GroupBy = "chunk",
                  chunks_per_document: int = 3) -> AuditedSearch:
        """View as (``clearance:admin`` only, in the admin's own tenant): ``search`` with the
        principals of ``scope.entitlements`` instead of the admin's. The audit event names the
        admin as the one who saw the chunks (its subject and issuer) with the principals used, and
        ``params.view_as`` repeats both (the admin's own principals and the set viewed as)."""
        Authenticator.require(admin, ADMIN)
        viewed = scope.entitlements
        if viewed.tenant != admin.tenant or scope.unrestricted_reason is not None:
            raise PermissionDeniedError("view as: only principal sets of the admin's own tenant", code="wrong_tenant")
        as_admin = Entitlements(subject=admin.subject, issuer=admin.issuer, tenant=admin.tenant,
                                principals=viewed.principals)  # no scopes: the set searches, nothing more
        view_as = {"admin": admin.subject, "admin_issuer": admin.issuer, "admin_principals": sorted(admin.principals),
                   "as_subject": viewed.subject, "principals": sorted(viewed.principals)}
        return self.search(replace(scope, entitlements=as_admin), query, top_k=top_k, mode=mode, explain=explain,
                           params={**params, "view_as": view_as}, group_by=group_by,
                           chunks_per_document=chunks_per_document)

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

    def count(self, scope: Scope) -> int:
        """How many chunks the caller can see (no chunk leaves, but the figure is a read too)."""
        t0 = time.perf_counter()
        try:
            n = self._search.count(scope)
        except ClearanceError as exc:
            self._record_failure("count", scope, None, {}, exc, t0)
            raise
        self._record(AuditEvent(
            at=_now(), request_id=current_request_id() or "", action="count", status=200,
            issuer=scope.entitlements.issuer, subject=scope.entitlements.subject, tenant=scope.entitlements.tenant,
            principals=scope.entitlements.principals, query=None, params={"visible_chunks": n}, chunks=(),
            latency_ms=(time.perf_counter() - t0) * 1000,
        ))
        return n

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
    return datetime.now(UTC)

