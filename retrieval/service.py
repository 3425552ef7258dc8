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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

import numpy as np

from core.audit import SeenChunk, acl_fingerprint
from core.errors import InvalidRequestError, NotFoundError
from core.logging import Log
from core.settings import RetrievalSettings
from core.types import Scope, SearchMode
from retrieval.bm25 import Bm25Encoder, word_term
from retrieval.cursor import digest
from retrieval.embedder import Embedder
from retrieval.identifiers import holds_all, identifier_tokens
from retrieval.index import ChunkIndex, IndexHit, IndexQuery
from retrieval.payload import DOCUMENT_FIELDS, SAMPLE_STEPS, ChunkPayload, PayloadField, doc_key
from retrieval.rerank import Reranker
from retrieval.scope_filter import (
    CompiledFilter,
    MetadataFilter,
    compile_scope,
    doc_filter,
    empty_corpus,
    metadata_conditions,
    sampled,
    tenant_filter,
    with_metadata,
)

GroupBy = Literal["chunk", "document"]  # document: one entry per document with its best chunks


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

    source: str = ""
    doc_id: str = ""
    version: str = ""

    def seen(self) -> SeenChunk:
        return SeenChunk(self.id, self.source, self.doc_id, self.version, self.acl_fingerprint)


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
    # group_by="document": one entry per document, ranked by its best chunk; ``hits`` then holds
    # the same chunks flattened in that order (what the answer hands out, for the audit trail).
    documents: list[DocumentGroup] | None = None
    # More results may follow this page (the candidate list was not exhausted).
    more: bool = False

    def handed_out(self) -> list[str]:
        """What a page cursor records as shown: chunk ids, or document keys when grouped."""
        if self.documents is not None:
            return [g.key for g in self.documents]
        return [h.id for h in self.hits]


@dataclass(frozen=True)
class DocumentGroup:
    """One document of a grouped answer: its best chunks, best first."""

    key: str  # ``doc_key``: tenant/source/doc_id
    source: str
    doc_id: str
    score: float  # the best chunk's
    hits: list[SearchHit]


@dataclass(frozen=True)
class DocumentView:
    """A document read: the response body, and what it handed out (for the audit trail)."""

    body: dict[str, Any]
    seen: list[SeenChunk]


log = Log("clearance.search")

TIE_MARGIN = 5
# Deepest candidate list one page may fetch (grouped or paged searches widen until they have
# enough documents or reach this many chunks).
MAX_CANDIDATES = 2000
DEGRADED_DENSE = "dense leg unavailable (query embedding failed): answered from BM25 only"
DEGRADED_RERANK = "reranker failed: results are in retrieval order"


# The share of sample-key steps whose chunks are counted to size the caller's scope (the dense plan and sampled
# IDF; 1/128 of the scope: ~2 ms at 1M chunks; ~16 % error at 5,000 chunks in scope, ~6 % at 30,000).
PROBE_STEPS = 8


def probed_size(index: ChunkIndex, flt: CompiledFilter) -> int:
    """The caller's scope size, from an exact count of its own chunks in a fixed band of sample
    keys. Not the engine's ``estimate``: that one is derived from whole-index cardinalities, so
    hidden documents move it, and through it the sample would move visible scores."""
    return index.count(sampled(flt, PROBE_STEPS / SAMPLE_STEPS)) * (SAMPLE_STEPS // PROBE_STEPS)


def idf_corpus(settings: RetrievalSettings, scope: Scope, flt: CompiledFilter, index: ChunkIndex,
               size: int | None = None) -> CompiledFilter | None:
    """The documents BM25's IDF is computed over (``retrieval.idf_scope``): the caller's own
    compiled scope by default, so no score depends on a document the caller cannot see; a fixed
    random sample of it when the scope (``probed_size``, or ``size`` when already probed) holds
    more than ``retrieval.idf_sample_points`` chunks. Both the decision and the sample's size
    depend on the caller's chunks alone."""
    if settings.idf_scope == "visible":
        cap = settings.idf_sample_points
        if not cap:
            return flt
        size = probed_size(index, flt) if size is None else size
        return sampled(flt, cap / size) if size > cap else flt
    if settings.idf_scope == "tenant":
        return tenant_filter(scope.entitlements.tenant)
    return None


def plans_exact(settings: RetrievalSettings, visible: int) -> bool:
    """The dense-search plan: few enough visible chunks (``visible``: ``probed_size``) that exact
    search is both exact and cheap; filtered HNSW loses recall there (BENCHMARKS.md). Sized from
    the caller's own chunks, not the engine's ``estimate``: that one combines whole-index
    cardinalities, so adding hidden stale documents halved it in a test and flipped the plan,
    and with it the caller's latency and recall."""
    return 0 < settings.exact_below_points and visible <= settings.exact_below_points


class SearchService:
    def __init__(self, settings: RetrievalSettings, index: ChunkIndex, embedder: Embedder, bm25: Bm25Encoder,
                 reranker: Reranker | None = None, *, metadata_fields: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        # Declared metadata fields and their types (``ingest.contracts.declared_metadata``): the
        # only fields a search may filter on.
        self.metadata_fields = dict(metadata_fields or {})
        self.index = index
        self.embedder = embedder
        self.bm25 = bm25
        self.reranker = reranker

    def _filter(self, scope: Scope) -> CompiledFilter:
        return compile_scope(scope, source_max_age_s=self.settings.source_max_age_s)

    def _fusion_explained(self) -> dict[str, Any]:
        """How a hybrid hit's score was made, for ``explain``."""
        dense, bm25 = self.settings.leg_weights()
        out: dict[str, Any] = {"fusion": self.settings.fusion, "weights": {"dense": dense, "bm25": bm25}}
        if self.settings.fusion == "rrf":
            out["rrf_k"] = self.settings.rrf_k
        return out

    def search(self, scope: Scope, query: str, *, top_k: int = 10, mode: SearchMode = "hybrid",
               explain: bool = False, group_by: GroupBy = "chunk", chunks_per_document: int = 3,
               seen: frozenset[str] = frozenset(), metadata: tuple[MetadataFilter, ...] = ()) -> SearchResult:
        """The caller's best ``top_k`` chunks (or documents, with ``group_by="document"``).

        ``seen`` holds digests (``retrieval.cursor.digest``) of chunk ids, or of document keys when
        grouped, that earlier pages handed out: they are skipped, so pages never repeat an item.
        Skipping happens on results the scope filter already admitted; it can only remove.
        """
        t0 = time.perf_counter()
        flt = self._filter(scope)  # raises on an empty scope before any work is done
        if metadata:  # only ever appended to the compiled scope (narrows)
            flt = with_metadata(flt, metadata_conditions(metadata, self.metadata_fields))
        query = query.strip()
        if not query:
            raise InvalidRequestError("query is empty")
        if not 1 <= top_k <= self.settings.max_top_k:
            raise InvalidRequestError(f"top_k must be between 1 and {self.settings.max_top_k}")
        if group_by not in ("chunk", "document"):
            raise InvalidRequestError("group_by must be 'chunk' or 'document'")
        if not 1 <= chunks_per_document <= 20:
            raise InvalidRequestError("chunks_per_document must be between 1 and 20")
        grouped = group_by == "document"
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
        # the probe sizes the dense plan, and the IDF sample (which reuses it, or probes itself)
        visible = probed_size(self.index, flt) if dense is not None and self.settings.exact_below_points else None
        exact = visible is not None and plans_exact(self.settings, visible)
        corpus = idf_corpus(self.settings, scope, flt, self.index, visible) if sparse is not None else None
        # With a reranker the engine returns more candidates (all within the scope) to reorder.
        # TIE_MARGIN more than needed, so equal scores (RRF gives equal scores to a dense-only and
        # a BM25-only hit of the same rank; duplicated texts tie in every mode) are ordered by id
        # below: the same query gives the same answer across restarts (the engine's own tie order
        # is not stable across processes). Pages skip what earlier pages showed, so they fetch
        # that much deeper; grouped answers need several chunks per document.
        want = len(seen) + top_k
        limit = want * (chunks_per_document if grouped else 1)
        if self.reranker is not None:
            limit = max(limit, self.settings.rerank_depth)
        limit = min(limit + TIE_MARGIN, MAX_CANDIDATES)
        while True:
            iq = IndexQuery(
                mode=mode, limit=limit, dense=dense, sparse=sparse,
                prefetch_limit=max(self.settings.prefetch_limit, limit), rrf_k=self.settings.rrf_k,
                weights=self.settings.leg_weights(), fusion=self.settings.fusion, with_legs=explain,
                with_dense=dense is not None, acorn=self.settings.acorn,
                acorn_max_selectivity=self.settings.acorn_max_selectivity, hnsw_ef=self.settings.hnsw_ef, exact=exact,
                idf_corpus=corpus,
            )
            raw = sorted(self.index.search(iq, flt), key=lambda h: (-h.score, h.id))
            exhausted = len(raw) < limit
            if mode == "hybrid" and self.settings.identifier_boost:
                raw = self._identifiers_first(query, raw, iq, flt)
            if grouped:
                raw = [h for h in raw if digest(_doc_key_of(h)) not in seen]
                enough = len({_doc_key_of(h) for h in raw}) > top_k
            else:
                raw = [h for h in raw if digest(h.id) not in seen]
                enough = len(raw) > top_k
            if enough or exhausted or limit >= MAX_CANDIDATES:
                break
            limit = min(limit * 2, MAX_CANDIDATES)
        more = not exhausted and limit < MAX_CANDIDATES
        hits = raw
        if self.reranker is None and not grouped:
            more = more or len(hits) > top_k
            hits = hits[:top_k]  # snippets and cosines only for what is returned
        elif self.reranker is None:
            hits = _best_per_document(hits, top_k, chunks_per_document, key=_doc_key_of)
            more = more or len({_doc_key_of(h) for h in raw}) > top_k
        legs_ms = {"encode": (t_engine - t_enc) * 1000, "engine": (time.perf_counter() - t_engine) * 1000}
        terms = set(self.bm25.tokenize(query))
        qvec = np.asarray(dense, dtype=np.float32) if dense is not None else None
        out = [self._hit(h, terms, scope if explain else None, qvec) for h in hits]
        if explain and mode == "hybrid":
            fusion = self._fusion_explained()
            for h in out:
                assert h.explain is not None
                h.explain.update(fusion)
        if self.reranker is not None:
            out, ok = self._rerank(query, out)
            if not ok:
                degraded = True
                warnings.append(DEGRADED_RERANK)
            if grouped:
                more = more or len({_hit_doc_key(h, scope) for h in out}) > top_k
                out = _best_per_document(out, top_k, chunks_per_document, key=lambda h: _hit_doc_key(h, scope))
            else:
                more = more or len(out) > top_k
        documents = None
        if grouped:
            documents = _groups(out, scope)
        else:
            out = out[:top_k]
        low = None
        if qvec is not None:
            best = max((h.dense_score for h in out if h.dense_score is not None), default=None)
            low = best is None or best < self.settings.low_confidence_dense
        return SearchResult(out, mode, (time.perf_counter() - t0) * 1000, degraded=degraded, warnings=warnings,
                            low_confidence=low, legs_ms=legs_ms, documents=documents, more=more)

    def _identifiers_first(self, query: str, fused: list[IndexHit], iq: IndexQuery,
                           flt: CompiledFilter) -> list[IndexHit]:
        """Chunks holding every identifier of the query first (``retrieval.identifiers``), found
        by a lexical query for the identifiers alone under the same filter."""
        idents = identifier_tokens(query)
        if not idents or len(query.split()) > self.settings.identifier_max_query_words:
            return fused
        cap = self.settings.identifier_max_chunks
        # Every holder has every identifier, so corpus statistics add nothing here; an empty IDF
        # corpus weighs the identifiers alike and spares a second count of the caller's scope
        # (what visible IDF costs, BENCHMARKS.md).
        lexical = replace(iq, mode="bm25", dense=None, sparse=self.bm25.encode_query(" ".join(idents)),
                          with_dense=False, with_legs=False, limit=max(iq.limit, cap + 1),
                          idf_corpus=empty_corpus(flt))
        exact = [h for h in self.index.search(lexical, flt) if holds_all(ChunkPayload.from_index(h.payload).text, idents)]
        if not exact or len(exact) > cap:
            return fused
        by_id = {h.id: h for h in fused}
        top = fused[0].score if fused else 0.0
        # Scores stay ordered with the fused list's: exact matches just above its best.
        first = [replace(by_id.get(h.id, h), score=top + (len(exact) - i) * 1e-6) for i, h in enumerate(exact)]
        taken = {h.id for h in first}
        return first + [h for h in fused if h.id not in taken]

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
        p = ChunkPayload.from_index(h.payload)
        cosine = float(np.dot(qvec, np.asarray(h.dense, dtype=np.float32))) if qvec is not None and h.dense else None
        explain = None
        if explain_scope is not None:
            granted = sorted(p.acl.allow & explain_scope.entitlements.principals)
            explain = {"leg_scores": h.leg_scores, "leg_ranks": h.leg_ranks, "granted_by": granted,
                       "dense_cosine": cosine}
        return SearchHit(h.id, h.score, p.text, snippet(p.text, terms, word_term=self.bm25.word_term), p.provenance(),
                         explain, cosine, _fingerprint(p), p.source, p.doc_id, p.version)

    def document(self, scope: Scope, source: str, doc_id: str) -> dict[str, Any]:
        """A document's metadata and its chunks, or ``NotFoundError`` (also when not visible)."""
        return self.read_document(scope, source, doc_id).body

    def read_document(self, scope: Scope, source: str, doc_id: str) -> DocumentView:
        """``document`` plus the chunks it handed out, with versions and ACL fingerprints."""
        key = doc_key(scope.entitlements.tenant, source, doc_id)
        hits = self.index.scroll(doc_filter(self._filter(scope), key), limit=10_000)
        chunks = sorted(((h.id, ChunkPayload.from_index(h.payload)) for h in hits), key=lambda c: c[1].chunk_index)
        if not chunks:
            raise NotFoundError("document not found")
        seen = [SeenChunk(cid, source, doc_id, p.version, _fingerprint(p)) for cid, p in chunks]
        return DocumentView(seen=seen, body={
            "source": source, "doc_id": doc_id,
            "provenance": chunks[0][1].provenance(DOCUMENT_FIELDS),
            "chunks": [{"id": cid, "chunk_index": p.chunk_index, "text": p.text, "section": p.section, "page": p.page}
                       for cid, p in chunks],
        })

    def count(self, scope: Scope) -> int:
        return self.index.count(self._filter(scope))


def _doc_key_of(h: IndexHit) -> str:
    return str(h.payload.get(PayloadField.DOC_KEY) or h.id)


def _hit_doc_key(h: SearchHit, scope: Scope) -> str:
    return doc_key(scope.entitlements.tenant, h.source, h.doc_id)


def _best_per_document(hits: list[Any], top_k: int, per_doc: int, *, key: Callable[[Any], str]) -> list[Any]:
    """The first ``top_k`` documents in ``hits`` order (so ranked by their best chunk), each with
    at most ``per_doc`` of its chunks, flattened document by document."""
    groups: dict[str, list[Any]] = {}
    for h in hits:
        k = key(h)
        if k not in groups:
            if len(groups) == top_k:
                continue
            groups[k] = []
        if len(groups[k]) < per_doc:
            groups[k].append(h)
    return [h for g in groups.values() for h in g]


def _groups(hits: list[SearchHit], scope: Scope) -> list[DocumentGroup]:
    groups: dict[str, DocumentGroup] = {}
    for h in hits:
        k = _hit_doc_key(h, scope)
        if k not in groups:
            groups[k] = DocumentGroup(k, h.source, h.doc_id, h.score, [])
        groups[k].hits.append(h)
    return list(groups.values())


def _fingerprint(p: ChunkPayload) -> str:
    """The ACL fingerprint (``core.audit``) of the payload the engine matched."""
    return acl_fingerprint(p.acl.allow, p.acl.deny)


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
