"""Scoped reads: search, document get, chunk fetch, counts. Every one compiles the caller's
scope into a filter first (``retrieval.scope_filter``); nothing reaches the index without it.

Degraded operation: when the query embedding fails (the model raises), a hybrid or dense
search is answered from the BM25 leg alone, with ``degraded=True`` and a warning; the filter is
the same compiled scope, so a degraded answer is never a wider one. When the index itself fails
the error is ``BackendUnavailableError`` (503, Retry-After) from the index boundary, never a
partial answer. Each hit carries the fingerprint of the ACL the engine filtered it with
(``core.audit``), for the audit trail.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Callable

import numpy as np

from core.audit import SeenChunk, payload_acl_fingerprint
from core.errors import InvalidRequestError, NotFoundError
from core.logging import Log
from core.settings import RetrievalSettings
from core.types import Scope, SearchMode
from retrieval.bm25 import Bm25Encoder, word_term
from retrieval.embedder import Embedder
from retrieval.index import ChunkIndex, IndexHit, IndexQuery
from retrieval.rerank import Reranker
from retrieval.scope_filter import CompiledFilter, compile_scope, doc_filter


@dataclass(frozen=True)
class SearchHit:
    id: str
    score: float
    text: str
    snippet: str
    provenance: dict[str, Any]
    explain: dict[str, Any] | None = None
    dense_score: float | None = None  # cosine between the query and this chunk
    acl_fingerprint: str = ""  # of the ACL in the payload the engine matched (core.audit)

    def seen(self) -> SeenChunk:
        p = self.provenance
        return SeenChunk(self.id, str(p.get("source") or ""), str(p.get("doc_id") or ""), str(p.get("version") or ""),
                         self.acl_fingerprint)


@dataclass(frozen=True)
class SearchResult:
    hits: list[SearchHit]
    mode: SearchMode
    took_ms: float
    degraded: bool = False
    warnings: list[str] = field(default_factory=list)
    # True when the best evidence is weak (best cosine below the calibrated threshold, or no
    # hit at all), so an assistant can route to a human; None in bm25 mode (no dense signal).
    low_confidence: bool | None = None
    legs_ms: dict[str, float] = field(default_factory=dict)  # "encode", "engine"


@dataclass(frozen=True)
class DocumentView:
    """A document read: the response body, and what it handed out (for the audit trail)."""

    body: dict[str, Any]
    seen: list[SeenChunk]


log = Log("clearance.search")

TIE_MARGIN = 5
DEGRADED_DENSE = "dense leg unavailable (query embedding failed): answered from BM25 only"
DEGRADED_RERANK = "reranker failed: results are in retrieval order"

PROVENANCE_FIELDS = ("source", "doc_id", "uri", "title", "section", "page", "version", "modified_at", "ingested_at",
                     "content_hash", "chunk_index", "element_types")


def small_scope(index: ChunkIndex, flt: CompiledFilter, exact_below_points: int) -> bool:
    """The dense-search plan: few enough visible chunks (estimated from the payload indexes) that
    exact search is both exact and cheap; filtered HNSW loses recall there (BENCHMARKS.md)."""
    return exact_below_points > 0 and index.estimate(flt) <= exact_below_points


class SearchService:
    def __init__(self, settings: RetrievalSettings, index: ChunkIndex, embedder: Embedder, bm25: Bm25Encoder,
                 reranker: Reranker | None = None) -> None:
        self.settings = settings
        self.index = index
        self.embedder = embedder
        self.bm25 = bm25
        self.reranker = reranker

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
        t_enc = time.perf_counter()
        dense: list[float] | None = None
        degraded, warnings = False, []
        if mode in ("hybrid", "dense"):
            try:
                dense = self.embedder.embed_query(query).tolist()
            except Exception as exc:  # a broken model degrades to BM25 under the same filter
                log.warning("search.degraded", reason="embedder_failed", error=type(exc).__name__)
                degraded, mode = True, "bm25"
                warnings.append(DEGRADED_DENSE)
        sparse = self.bm25.encode_query(query) if mode in ("hybrid", "bm25") else None
        t_engine = time.perf_counter()
        # With a reranker the engine returns more candidates (all within the scope) to reorder.
        # TIE_MARGIN more than needed, so equal scores (RRF gives equal scores to a dense-only and
        # a BM25-only hit of the same rank; duplicated texts tie in every mode) are ordered by id
        # below: the same query gives the same answer across restarts (the engine's own tie order
        # is not stable across processes).
        limit = (max(top_k, self.settings.rerank_depth) if self.reranker is not None else top_k) + TIE_MARGIN
        iq = IndexQuery(
            mode=mode, limit=limit, dense=dense, sparse=sparse,
            prefetch_limit=max(self.settings.prefetch_limit, limit), rrf_k=self.settings.rrf_k,
            weights=(self.settings.dense_weight, self.settings.bm25_weight), with_legs=explain,
            with_dense=dense is not None, acorn=self.settings.acorn,
            exact=dense is not None and small_scope(self.index, flt, self.settings.exact_below_points),
        )
        hits = sorted(self.index.search(iq, flt), key=lambda h: (-h.score, h.id))
        if self.reranker is None:
            hits = hits[:top_k]  # snippets and cosines only for what is returned
        legs_ms = {"encode": (t_engine - t_enc) * 1000, "engine": (time.perf_counter() - t_engine) * 1000}
        terms = set(self.bm25.tokenize(query))
        qvec = np.asarray(dense, dtype=np.float32) if dense is not None else None
        out = [self._hit(h, terms, scope if explain else None, qvec) for h in hits]
        if explain and mode == "hybrid":
            for h in out:
                assert h.explain is not None
                h.explain.update(fusion="rrf", rrf_k=self.settings.rrf_k)
        if self.reranker is not None:
            out, ok = self._rerank(query, out)
            if not ok:
                degraded = True
                warnings.append(DEGRADED_RERANK)
        out = out[:top_k]
        low = None
        if qvec is not None:
            best = max((h.dense_score for h in out if h.dense_score is not None), default=None)
            low = best is None or best < self.settings.low_confidence_dense
        return SearchResult(out, mode, (time.perf_counter() - t0) * 1000, degraded=degraded, warnings=warnings,
                            low_confidence=low, legs_ms=legs_ms)

    def _rerank(self, query: str, hits: list[SearchHit]) -> tuple[list[SearchHit], bool]:
        """Reorder (never add to) the scoped candidates; on failure keep the retrieval order."""
        assert self.reranker is not None
        try:
            scores = self.reranker.scores(query, [h.text for h in hits])
        except Exception as exc:
            log.warning("search.degraded", reason="reranker_failed", error=type(exc).__name__)
            return hits, False
        out = []
        for h, s in sorted(zip(hits, scores), key=lambda pair: -pair[1]):
            explain = {**h.explain, "retrieval_score": h.score, "rerank_score": s} if h.explain is not None else None
            out.append(replace(h, score=float(s), explain=explain))
        return out, True

    def _hit(self, h: IndexHit, terms: set[str], explain_scope: Scope | None, qvec: np.ndarray | None) -> SearchHit:
        p = h.payload
        text = str(p.get("text", ""))
        cosine = float(np.dot(qvec, np.asarray(h.dense, dtype=np.float32))) if qvec is not None and h.dense else None
        explain = None
        if explain_scope is not None:
            granted = sorted(set(p.get("acl_allow", [])) & explain_scope.entitlements.principals)
            explain = {"leg_scores": h.leg_scores, "leg_ranks": h.leg_ranks, "granted_by": granted,
                       "dense_cosine": cosine}
        return SearchHit(h.id, h.score, text, snippet(text, terms, word_term=self.bm25.word_term), {k: p.get(k) for k in PROVENANCE_FIELDS}, explain,
                         cosine, payload_acl_fingerprint(p))

    def document(self, scope: Scope, source: str, doc_id: str) -> dict[str, Any]:
        """A document's metadata and its chunks, or ``NotFoundError`` (also when not visible)."""
        return self.read_document(scope, source, doc_id).body

    def read_document(self, scope: Scope, source: str, doc_id: str) -> DocumentView:
        """``document`` plus the chunks it handed out, with versions and ACL fingerprints."""
        key = f"{scope.entitlements.tenant}/{source}/{doc_id}"
        chunks = sorted(self.index.scroll(doc_filter(self._filter(scope), key), limit=10_000),
                        key=lambda h: int(h.payload.get("chunk_index", 0)))
        if not chunks:
            raise NotFoundError("document not found")
        first = chunks[0].payload
        seen = [SeenChunk(c.id, source, doc_id, str(c.payload.get("version") or ""), payload_acl_fingerprint(c.payload))
                for c in chunks]
        return DocumentView(seen=seen, body={
            "source": source, "doc_id": doc_id,
            "provenance": {k: first.get(k) for k in PROVENANCE_FIELDS if k not in ("section", "page", "chunk_index", "element_types")},
            "chunks": [{"id": c.id, "chunk_index": c.payload.get("chunk_index"), "text": c.payload.get("text"),
                        "section": c.payload.get("section"), "page": c.payload.get("page")} for c in chunks],
        })

    def count(self, scope: Scope) -> int:
        return self.index.count(self._filter(scope))


_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def snippet(text: str, terms: set[str], width: int = 240, word_term: Callable[[str], str | None] = word_term) -> str:
    """A window of ``text`` around the first query term, with matched words in ``**bold**``."""
    matches = [m for m in _WORD.finditer(text) if word_term(m.group(0)) in terms]
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
