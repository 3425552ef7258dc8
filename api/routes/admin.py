"""Operator API (scope ``clearance:admin``): sources and their freshness, jobs, documents with
their status, resync of a filesystem source, and "who saw document X since T".

Audit answers are confined to the admin's own tenant.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import AdminCaller, AuthenticatedRoute, ServicesDep
from api.errors import error_responses
from api.fields import UtcDateTime

router = APIRouter(tags=["admin"], prefix="/v1/admin", route_class=AuthenticatedRoute,
                   responses=error_responses(401, 403, 503))


@router.get("/sources")
def list_sources(caller: AdminCaller, services: ServicesDep) -> dict[str, Any]:
    return {"sources": services.admin.sources(caller)}


@router.get("/jobs", responses=error_responses(422))
def list_jobs(caller: AdminCaller, services: ServicesDep, source: str | None = None,
              limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
    return {"jobs": services.admin.jobs(caller, source, limit)}


@router.get("/documents", responses=error_responses(422))
def list_documents(caller: AdminCaller, services: ServicesDep, source: str | None = None,
                   state: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                   offset: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:
    docs = services.admin.documents(caller, source, state)
    return {"total": len(docs), "documents": docs[offset:offset + limit]}


@router.post("/sources/{source}/resync", responses=error_responses(404, 422))
def resync(source: str, caller: AdminCaller, services: ServicesDep) -> dict[str, Any]:
    """Sync a filesystem source again from the root it was last synced from."""
    return {"source": source, **services.writes.resync(caller, source).as_dict()}


@router.get("/audit/documents/{source}/{doc_id:path}", responses=error_responses(404, 422))
def who_saw(source: str, doc_id: str, caller: AdminCaller, services: ServicesDep,
            since: UtcDateTime | None = None, limit: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> dict[str, Any]:
    """Every search hit and document read that handed out (chunks of) this document."""
    out = services.admin.who_saw(caller, source, doc_id, since, limit)
    return {
        "source": source, "doc_id": doc_id, "tenant": caller.tenant,
        "since": since.isoformat() if since else None,
        "subjects": [{"issuer": i, "subject": s} for i, s in out.subjects],
        "reads": [r.as_dict() for r in out.reads],
    }
