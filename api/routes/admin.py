"""Operator API (scope ``clearance:admin``): sources (create, show, change writers, delete; their
freshness), jobs, documents with their status, resync of a filesystem source (a write: the
caller needs ``clearance:ingest`` and a writer principal of the source), "who saw document X
since T", a document's ACL history and "could principals P read it at time T".

Source changes go through ``app.writes`` (audited, refusals too); audit answers are confined to
the admin's own tenant.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import Field

from api.deps import AdminCaller, AuthenticatedRoute, ServicesDep, source_administrator, writer
from api.errors import error_responses
from api.fields import RequestBody, UtcDateTime
from core.errors import InvalidRequestError
from core.types import Entitlements, principal_problem

router = APIRouter(tags=["admin"], prefix="/v1/admin", route_class=AuthenticatedRoute,
                   responses=error_responses(401, 403, 503))


class CreateSource(RequestBody):
    name: str = Field(min_length=1, max_length=128)
    kind: Literal["push", "filesystem", "connector"]
    writers: list[str] = Field(default_factory=list, max_length=1000,
                               description="principals whose callers may write the source (with clearance:ingest)")
    root: str | None = Field(default=None, description="filesystem sources: a folder under ingest.allowed_roots")
    connector: str | None = Field(default=None, max_length=128,
                                  description="connector sources: the installed connector (filesystem, posix, sql, imap, ...)")
    config: dict[str, Any] = Field(default_factory=dict, description="connector sources: the connector's config "
                                   "(a 'root' in it must be under ingest.allowed_roots)")
    content_interval_s: int = Field(default=3600, ge=1, description="connector sources: seconds between content syncs")
    permission_interval_s: int = Field(default=300, ge=1,
                                       description="connector sources: seconds between permission syncs")


class UpdateSource(RequestBody):
    writers: list[str] = Field(max_length=1000, description="the new writer principals (replaces the old list)")


@router.get("/sources")
def list_sources(caller: AdminCaller, services: ServicesDep) -> dict[str, Any]:
    return {"sources": services.admin.sources(caller)}


@router.post("/sources", status_code=201, responses=error_responses(400, 409, 422))
def create_source(body: CreateSource, caller: Annotated[Entitlements, Depends(source_administrator("source_create"))],
                  services: ServicesDep) -> dict[str, Any]:
    """Register a source with its kind, writers and (filesystem) root or (connector) connector."""
    from app.sources import ConnectorSpec

    spec = (ConnectorSpec(body.connector or "", body.config, body.content_interval_s, body.permission_interval_s)
            if body.kind == "connector" else None)
    return services.writes.create_source(caller, body.name, body.kind, body.writers, body.root, connector=spec).as_dict()


@router.get("/sources/{source}", responses=error_responses(404, 422))
def show_source(source: str, caller: AdminCaller, services: ServicesDep) -> dict[str, Any]:
    return services.admin.source(caller, source)


@router.patch("/sources/{source}", responses=error_responses(400, 404, 422))
def update_source(source: str, body: UpdateSource,
                  caller: Annotated[Entitlements, Depends(source_administrator("source_update"))], services: ServicesDep) -> dict[str, Any]:
    """Replace the writer principals of a source."""
    return services.writes.update_source(caller, source, body.writers).as_dict()


@router.delete("/sources/{source}", responses=error_responses(404, 422))
def delete_source(source: str, caller: Annotated[Entitlements, Depends(source_administrator("source_delete"))],
                  services: ServicesDep) -> dict[str, Any]:
    """Delete a source on purpose: every document and chunk it holds, then the source."""
    return services.writes.delete_source(caller, source)


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


@router.post("/sources/{source}/resync", responses=error_responses(404, 409, 422))
def resync(source: str, caller: Annotated[Entitlements, Depends(writer("resync"))], services: ServicesDep,
           allow_deletes: bool = False) -> dict[str, Any]:
    """Sync a filesystem source again from its registered root (a write: clearance:ingest and a
    writer principal of the source)."""
    return {"source": source, **services.writes.resync(caller, source, allow_deletes=allow_deletes).as_dict()}


@router.get("/documents/{source}/{doc_id:path}/acl-history", responses=error_responses(404, 422))
def acl_history(source: str, doc_id: str, caller: AdminCaller, services: ServicesDep) -> dict[str, Any]:
    """Every change of the document (content, ACL, metadata, delete): when, by whom, the ACL and
    content hash before and after. Empty when the write audit holds none."""
    changes = services.admin.acl_history(caller, source, doc_id)
    return {"source": source, "doc_id": doc_id, "tenant": caller.tenant, "changes": [c.as_dict() for c in changes]}


@router.get("/documents/{source}/{doc_id:path}/access", responses=error_responses(404, 422))
def access_at(source: str, doc_id: str, caller: AdminCaller, services: ServicesDep,
              principal: Annotated[list[str], Query(min_length=1, max_length=1000)],
              at: UtcDateTime) -> dict[str, Any]:
    """Could a caller holding these principals read the document at time ``at``? Answered from
    the ACL history (the ACL the last change before ``at`` left; deny beats allow)."""
    problems = [p for p in map(principal_problem, principal) if p is not None]
    if problems:
        raise InvalidRequestError("; ".join(problems), code="invalid_principal")
    out = services.admin.access_at(caller, source, doc_id, frozenset(principal), at)
    return {"source": source, "doc_id": doc_id, "at": at.isoformat(), "principals": sorted(set(principal)),
            **out.as_dict()}


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
