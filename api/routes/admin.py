"""Operator API (scope ``clearance:admin``): sources and their freshness, jobs, documents with
their status, resync of a filesystem source, and "who saw document X since T".

Audit answers are confined to the admin's own tenant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import AdminCaller, AuthenticatedRoute, ServicesDep
from api.errors import error_responses
from api.fields import UtcDateTime
from core.errors import InvalidRequestError, NotFoundError
from ingest.catalog import unavailable
from ingest.sources import FilesystemSource
from ingest.status import document_statuses, job_dicts

router = APIRouter(tags=["admin"], prefix="/v1/admin", route_class=AuthenticatedRoute,
                   responses=error_responses(401, 403, 503))


@router.get("/sources")
def list_sources(caller: AdminCaller, services: ServicesDep) -> dict[str, Any]:
    return {"sources": [s.as_dict() for s in services.freshness.statuses()]}


@router.get("/jobs", responses=error_responses(422))
def list_jobs(caller: AdminCaller, services: ServicesDep, source: str | None = None,
              limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
    with unavailable("catalog"):
        return {"jobs": job_dicts(services.catalog, source=source, limit=limit)}


@router.get("/documents", responses=error_responses(422))
def list_documents(caller: AdminCaller, services: ServicesDep, source: str | None = None,
                   state: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                   offset: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:
    with unavailable("catalog"):
        docs = document_statuses(services.catalog, caller.tenant, source=source)
    if state is not None:
        docs = [d for d in docs if d["status"] == state]
    return {"total": len(docs), "documents": docs[offset:offset + limit]}


@router.post("/sources/{source}/resync", responses=error_responses(404, 422))
def resync(source: str, caller: AdminCaller, services: ServicesDep) -> dict[str, Any]:
    """Sync a filesystem source again from the root it was last synced from."""
    with unavailable("catalog"):
        row = services.catalog.source_row(source)
    if row is None:
        raise NotFoundError(f"unknown source {source!r}")
    if row.kind != "filesystem" or not row.root:
        raise InvalidRequestError(f"source {source!r} is not a filesystem source (it is {row.kind}); "
                                  "push sources are refreshed by their system of record", code="not_resyncable")
    root = Path(row.root)
    if not root.is_dir():
        raise InvalidRequestError(f"the root of source {source!r} is no longer a directory on the server",
                                  code="source_root_missing")
    report = services.ingestor.sync(FilesystemSource(root, source))
    return {"source": source, **report.as_dict()}


@router.get("/audit/documents/{source}/{doc_id:path}", responses=error_responses(404, 422))
def who_saw(source: str, doc_id: str, caller: AdminCaller, services: ServicesDep,
            since: UtcDateTime | None = None, limit: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> dict[str, Any]:
    """Every search hit and document read that handed out (chunks of) this document."""
    reads = services.audit.document_reads(caller.tenant, source, doc_id, since=since, limit=limit)
    subjects = sorted({(r.issuer, r.subject) for r in reads})
    return {
        "source": source, "doc_id": doc_id, "tenant": caller.tenant,
        "since": since.isoformat() if since else None,
        "subjects": [{"issuer": i, "subject": s} for i, s in subjects],
        "reads": [r.as_dict() for r in reads],
    }
