"""The ``ChunkIndex`` seam: one interface over Qdrant Edge (embedded) and Qdrant server.

Every read takes a ``CompiledFilter`` (from ``retrieval.scope_filter``), so there is no way to
query an index without a scope. Writers validate vectors before they reach the engine: a
malformed sparse vector poisons an Edge shard for good.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from core.types import FusionMethod, SearchMode
from retrieval.bm25 import SparseVector, validate_sparse
from retrieval.scope_filter import CompiledFilter

DENSE = "dense"
# ACORN up to this share of the points in scope (the whole compiled filter); above it plain
# filtered HNSW keeps its recall and ACORN only costs time. The default of
# ``retrieval.acorn_max_selectivity``: at 0.15, plain HNSW lost a quarter of the true top 10 at a
# 25 % scope (BENCHMARKS.md, "Beside a peer").
ACORN_MAX_SELECTIVITY = 0.5
SPARSE = "bm25"
LEGS: tuple[SearchMode, SearchMode] = ("dense", "bm25")  # the modes a hybrid query fuses


@dataclass(frozen=True)
class IndexPoint:
    id: str  # a UUID string: Edge accepts only integers or UUIDs
    dense: Sequence[float]
    sparse: SparseVector
    payload: dict[str, Any]


@dataclass(frozen=True)
class IndexQuery:
    mode: SearchMode
    limit: int
    dense: Sequence[float] | None
    sparse: SparseVector | None
    prefetch_limit: int
    rrf_k: int
    weights: tuple[float, float] = (1.0, 1.0)  # (dense, bm25)
    fusion: FusionMethod = "rrf"  # hybrid only
    with_legs: bool = False  # also return per-leg scores/ranks (explain)
    with_dense: bool = False  # return each hit's dense vector (to compute its cosine to the query)
    exact: bool = False  # brute-force dense search (benchmarks compare HNSW recall against it)
    # ACORN filtered HNSW for the dense leg: without it, recall@10 vs exact fell to 0.19 at a
    # 10 %-visible ACL on 100k chunks (the filtered graph falls apart); with it 0.97.
    acorn: bool = True
    # ACORN runs when the filter keeps at most this share of the points (the engine's estimate);
    # above it plain filtered HNSW does (``retrieval.acorn_max_selectivity``).
    acorn_max_selectivity: float = ACORN_MAX_SELECTIVITY
    # HNSW candidate list size for the dense leg (``retrieval.hnsw_ef``); None: the engine's own.
    hnsw_ef: int | None = None
    # BM25 IDF statistics over the points matching this filter (None: the whole index).
    idf_corpus: CompiledFilter | None = None


@dataclass(frozen=True)
class IndexHit:
    id: str
    score: float
    payload: dict[str, Any]
    leg_scores: dict[str, float] = field(default_factory=dict)
    leg_ranks: dict[str, int] = field(default_factory=dict)
    dense: list[float] | None = None


class ChunkIndex(Protocol):
    """Chunk storage and scoped retrieval. Implementations: ``EdgeIndex``, ``QdrantServerIndex``."""

    def upsert(self, points: Sequence[IndexPoint]) -> None:
        """Insert or replace points (ids are deterministic, so re-ingest overwrites)."""
        ...

    def delete(self, ids: Sequence[str]) -> None:
        """Delete points by id; unknown ids are ignored."""
        ...

    def set_payload(self, ids: Sequence[str], payload: dict[str, Any]) -> None:
        """Update payload fields without touching vectors (ACL-only changes)."""
        ...

    def set_payloads(self, updates: Sequence[tuple[Sequence[str], dict[str, Any]]]) -> None:
        """Several ``set_payload`` updates, in one engine request where the engine takes a batch
        (an index upgrade writes a thousand distinct values per pass)."""
        ...

    def search(self, query: IndexQuery, flt: CompiledFilter) -> list[IndexHit]:
        """Ranked hits that satisfy ``flt``; hybrid fuses both legs with RRF in one engine call."""
        ...

    def scroll(self, flt: CompiledFilter, limit: int) -> list[IndexHit]:
        """Unranked points satisfying ``flt`` (document reads, chunk fetch); score is 0."""
        ...

    def estimate(self, flt: CompiledFilter) -> int:
        """Approximate count of points matching ``flt`` from the payload indexes (cheap)."""
        ...

    def count(self, flt: CompiledFilter) -> int:
        """Exact number of points satisfying ``flt``."""
        ...

    def retrieve(self, ids: Sequence[str]) -> list[IndexHit]:
        """Points by id with payload, unscoped: for ingestion bookkeeping only, never for reads."""
        ...

    def size(self) -> int:
        """Total number of points (operational figure; no payload leaves)."""
        ...

    def optimize(self) -> bool:
        """Build the search structures for recent writes (Edge has no background optimizer);
        True when work was done. Backends that optimize on their own return False."""
        ...

    def flush(self) -> None:
        """Make every acknowledged write durable (backups take a copy after this)."""
        ...

    def close(self) -> None:
        """Flush and release the index (for Edge: its WAL lock)."""
        ...

    def writes_held(self) -> AbstractContextManager[None]:
        """While held, no write of this process reaches the index (a consistent backup copy)."""
        ...

    def schema_version(self) -> int | None:
        """The index layout version stored with the index itself; None when none is stored."""
        ...

    def set_schema_version(self, version: int) -> None:
        ...

    def drop(self) -> None:
        """Delete the index with every point (a rebuild from the catalog follows); closes it."""
        ...


def dense_of(vector: object) -> list[float] | None:
    """The dense vector of a returned point, when it was asked for."""
    return list(vector[DENSE]) if isinstance(vector, dict) and DENSE in vector else None


def validate_point(p: IndexPoint, dim: int) -> None:
    if len(p.dense) != dim or not all(math.isfinite(x) for x in p.dense):
        raise ValueError(f"point {p.id}: dense vector must have {dim} finite values")
    validate_sparse(p.sparse.indices, p.sparse.values)


def rank_legs(
    fused: list[IndexHit], dense: list[IndexHit], sparse: list[IndexHit]
) -> list[IndexHit]:
    """Attach each leg's score and 1-based rank to the fused hits (for ``explain``)."""
    legs = {DENSE: {h.id: (i + 1, h.score) for i, h in enumerate(dense)},
            SPARSE: {h.id: (i + 1, h.score) for i, h in enumerate(sparse)}}
    out = []
    for h in fused:
        scores, ranks = {}, {}
        for leg, table in legs.items():
            if h.id in table:
                ranks[leg], scores[leg] = table[h.id]
        out.append(IndexHit(h.id, h.score, h.payload, scores, ranks, h.dense))
    return out
