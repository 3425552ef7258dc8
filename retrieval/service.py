"""Scoped reads: search, document get, chunk fetch, counts. Every one compiles the caller's
scope into a filter first (``retrieval.scope_filter``); nothing reaches the index without it.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.errors import InvalidRequestError, NotFoundError
from core.settings import RetrievalSettings
from core.types import Scope, SearchMode
from retrieval.bm25 import Bm25Encoder, tokenize
from retrieval.embedder import Embedder
from retrieval.index import ChunkIndex, IndexHit, IndexQuery
from retrieval.scope_filter import CompiledFilter, compile_scope, doc_filter


@dataclass(frozen=True)
class SearchHit:
    id: str
    score: float
    text: str
    snippet: str
    provenance: dict[str, Any]
    explain: dict[str, Any] | None = None


@dataclass(frozen=True)
class SearchResult:
    hits: list[SearchHit]
    mode: SearchMode
    took_ms: float
    degraded: bool = False
    warnings: list[str] = field(default_factory=list)


PROVENANCE_FIELDS = ("source", "doc_id", "uri", "title", "section", "page", "version", "modified_at", "ingested_at",
                     "content_hash", "chunk_index", "element_types")


class SearchService:
    def __init__(self, settings: RetrievalSettings, index: ChunkIndex, embedder: Embedder, bm25: Bm25Encoder) -> None:
        self.settings = settings
        self.index = index
        self.embedder = embedder
        self.bm25 = bm25

    def _filter(self, scope: Scope) -> CompiledFilter:
        return compile_scope(scope, source_max_age_s=self.settings.source_max_age_s)

    def search(self, scope: Scope, query: str, *, top_k: int = 10, mode: SearchMode = "hybrid",
               explain: bool = False) -> SearchResult:
        t0 = time.perf_counter()
        flt = self._filter(scope)  # raises on an empty scope before any work is done
        query = query.strip()
        if not query:
            raise InvalidRequestError("query is empty")
        if not 1 <= top_k <= self.settings.max_top_k:
            raise InvalidRequestError(f"top_k must be between 1 and {self.settings.max_top_k}")
        dense = self.embedder.embed_query(query).tolist() if mode in ("hybrid", "dense") else None
        sparse = self.bm25.encode_query(query) if mode in ("hybrid", "bm25") else None
        iq = IndexQuery(
            mode=mode, limit=top_k, dense=dense, sparse=sparse,
            prefetch_limit=max(self.settings.prefetch_limit, top_k), rrf_k=self.settings.rrf_k,
            weights=(self.settings.dense_weight, self.settings.bm25_weight), with_legs=explain,
        )
        hits = self.index.search(iq, flt)
        terms = set(tokenize(query))
        out = [self._hit(h, terms, scope if explain else None) for h in hits]
        return SearchResult(out, mode, (time.perf_counter() - t0) * 1000)

    def _hit(self, h: IndexHit, terms: set[str], explain_scope: Scope | None) -> SearchHit:
        p = h.payload
        text = str(p.get("text", ""))
        explain = None
        if explain_scope is not None:
            granted = sorted(set(p.get("acl_allow", [])) & explain_scope.entitlements.principals)
            explain = {"leg_scores": h.leg_scores, "leg_ranks": h.leg_ranks, "granted_by": granted,
                       "fusion": "rrf", "rrf_k": self.settings.rrf_k}
        return SearchHit(h.id, h.score, text, snippet(text, terms), {k: p.get(k) for k in PROVENANCE_FIELDS}, explain)

    def document(self, scope: Scope, source: str, doc_id: str) -> dict[str, Any]:
        """A document's metadata and its chunks, or ``NotFoundError`` (also when not visible)."""
        key = f"{scope.entitlements.tenant}/{source}/{doc_id}"
        chunks = sorted(self.index.scroll(doc_filter(self._filter(scope), key), limit=10_000),
                        key=lambda h: int(h.payload.get("chunk_index", 0)))
        if not chunks:
            raise NotFoundError("document not found")
        first = chunks[0].payload
        return {
            "source": source, "doc_id": doc_id,
            "provenance": {k: first.get(k) for k in PROVENANCE_FIELDS if k not in ("section", "page", "chunk_index", "element_types")},
            "chunks": [{"id": c.id, "chunk_index": c.payload.get("chunk_index"), "text": c.payload.get("text"),
                        "section": c.payload.get("section"), "page": c.payload.get("page")} for c in chunks],
        }

    def count(self, scope: Scope) -> int:
        return self.index.count(self._filter(scope))


_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def snippet(text: str, terms: set[str], width: int = 240) -> str:
    """A window of ``text`` around the first query term, with matched words in ``**bold**``."""
    matches = [m for m in _WORD.finditer(text) if tokenize(m.group(0)) and tokenize(m.group(0))[0] in terms]
    start = max(0, matches[0].start() - width // 3) if matches else 0
    end = min(len(text), start + width)
    out, pos = [], start
    for m in matches:
        if m.start() < start or m.end() > end:
            continue
        out.append(text[pos:m.start()])
        out.append(f"**{m.group(0)}**")
        pos = m.end()
    out.append(text[pos:end])
    body = "".join(out).replace("\n", " ").strip()
    return ("…" if start > 0 else "") + body + ("…" if end < len(text) else "")


def parse_iso(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None
