from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from api.deps import AuthenticatedRoute, SearchCaller, ServicesDep
from api.errors import error_responses
from api.fields import RequestBody, UtcDateTime
from core.types import Entitlements, Scope
from retrieval.scope_filter import parse_metadata_filters
from retrieval.service import SearchHit

router = APIRouter(tags=["search"], route_class=AuthenticatedRoute, responses=error_responses(401, 403, 503))


class SearchRequest(RequestBody):
    query: str = Field(min_length=1, max_length=4000)
    top_k: int = Field(default=10, ge=1, le=100)
    mode: Literal["hybrid", "dense", "bm25"] = "hybrid"
    max_age: int | None = Field(default=None, ge=1, description="only chunks modified within this many seconds")
    sources: list[str] | None = Field(default=None, min_length=1)
    modified_after: UtcDateTime | None = None
    modified_before: UtcDateTime | None = None
    explain: bool = False
    group_by: Literal["chunk", "document"] = Field(
        default="chunk", description="document: at most one entry per document (in `documents`), each with its best "
                                     "chunks, ranked by its best chunk; top_k then counts documents")
    chunks_per_document: int = Field(default=3, ge=1, le=20, description="chunks kept per document when grouped")
    metadata: dict[str, MetadataCondition] | None = Field(
        default=None, max_length=32,
        description="filters on metadata fields the source contracts declare (undeclared: 422): a value "
                    "(equality), a list (any of) or {gte, lt} (numeric range, int/float fields)")
    cursor: str | None = Field(default=None, max_length=16384,
                               description="`next_cursor` of the previous page: the same caller and the same query "
                                           "and filters only; items an earlier page showed are never repeated")


class MetadataRange(BaseModel):
    model_config = {"extra": "forbid"}
    gte: float | str | None = Field(default=None, description="a number, or an ISO 8601 date for date fields")
    lt: float | str | None = None


Scalar = str | bool | int | float  # bool before int: JSON true stays a bool
MetadataCondition = Scalar | list[Scalar] | MetadataRange


class Hit(BaseModel):
    id: str
    score: float
    text: str
    snippet: str
    provenance: dict[str, Any]
    explain: dict[str, Any] | None = None


class DocumentHits(BaseModel):
    source: str
    doc_id: str
    title: str
    uri: str
    score: float = Field(description="the best chunk's score")
    hits: list[Hit] = Field(description="the document's best chunks, best first")


class SearchResponse(BaseModel):
    hits: list[Hit] = Field(description="the ranked chunks (empty with group_by=document: see documents)")
    documents: list[DocumentHits] | None = Field(default=None, description="with group_by=document only")
    next_cursor: str | None = Field(default=None, description="pass as `cursor` for the next page; null: no more")
    mode: str
    took_ms: float
    degraded: bool
    warnings: list[str]
    low_confidence: bool | None = Field(
        default=None, description="best evidence is weak (calibrated cosine threshold); null in bm25 mode")
    stale_sources: list[str] = Field(
        default_factory=list, description="sources of returned chunks that are beyond their freshness SLA")


def scope_for(caller: Entitlements, req: SearchRequest | None = None) -> Scope:
    if req is None:
        return Scope(entitlements=caller)
    return Scope(entitlements=caller, max_age_s=req.max_age,
                 sources=frozenset(req.sources) if req.sources else None,
                 modified_after=req.modified_after, modified_before=req.modified_before)


@router.post("/v1/search", response_model=SearchResponse, responses=error_responses(400, 422))
async def search(req: SearchRequest, caller: SearchCaller, services: ServicesDep) -> SearchResponse:
    params = req.model_dump(mode="json", include={"max_age", "sources", "modified_after", "modified_before", "explain",
                                                  "metadata"}, exclude_none=False)
    metadata = parse_metadata_filters(params["metadata"] or {})
    if params["metadata"] is None:
        del params["metadata"]
    # One thread-pool hop for the blocking part (encode, engine, audit write); the response is
    # built on the loop, so FastAPI does not hop again to serialise it.
    out = await run_in_threadpool(services.reads.search, scope_for(caller, req), req.query, top_k=req.top_k,
                                  mode=req.mode, explain=req.explain, params=params, group_by=req.group_by,
                                  chunks_per_document=req.chunks_per_document, cursor=req.cursor, metadata=metadata)
    res = out.result
    documents = None
    if res.documents is not None:
        documents = [DocumentHits(source=g.source, doc_id=g.doc_id, title=str(g.hits[0].provenance.get("title") or ""),
                                  uri=str(g.hits[0].provenance.get("uri") or ""), score=g.score,
                                  hits=[_hit(h) for h in g.hits]) for g in res.documents]
    return SearchResponse(
        hits=[] if documents is not None else [_hit(h) for h in res.hits], documents=documents,
        next_cursor=out.next_cursor,
        mode=res.mode, took_ms=round(res.took_ms, 3), degraded=res.degraded,
        warnings=res.warnings + [s.warning() for s in out.stale],
        low_confidence=res.low_confidence, stale_sources=[s.name for s in out.stale],
    )


def _hit(h: SearchHit) -> Hit:
    return Hit(id=h.id, score=h.score, text=h.text, snippet=h.snippet, provenance=h.provenance, explain=h.explain)


@router.get("/v1/documents/{source}/{doc_id:path}", responses=error_responses(404, 422))
def get_document(source: str, doc_id: str, caller: SearchCaller, services: ServicesDep) -> dict:
    body, stale = services.reads.document(scope_for(caller), source, doc_id)
    return {**body, "stale_sources": [s.name for s in stale]}


@router.get("/v1/chunks/count")
def count_chunks(caller: SearchCaller, services: ServicesDep) -> dict:
    return {"visible_chunks": services.reads.count(scope_for(caller))}
