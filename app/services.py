"""Composition root: the only place that picks implementations from settings."""

from __future__ import annotations

from dataclasses import dataclass

from app.admin import AdminService
from app.ops import scrape_gauges
from app.reads import AuditedReads
from app.writes import WriteService
from auth.authenticator import Authenticator, build_authenticator
from core.metrics import Metrics
from retrieval.metered import MeteredEmbedder
from core.settings import Settings
from store.audit import AuditLog
from store.catalog import Catalog
from store.freshness import Freshness
from ingest.pipeline import Ingestor
from retrieval.bm25 import Bm25Encoder
from retrieval.cursor import CursorCodec
from retrieval.embedder import Embedder, build_embedder
from retrieval.index import ChunkIndex
from retrieval.rerank import Reranker
from retrieval.service import SearchService


CURSOR_KEY = "search.cursor_key"


@dataclass
class Services:
    settings: Settings
    catalog: Catalog
    index: ChunkIndex
    embedder: Embedder
    bm25: Bm25Encoder
    # Unaudited: for the offline evaluation harness and for tests only. Every caller-facing read
    # goes through ``reads``; routes never see this one.
    search_unaudited: SearchService
    ingestor: Ingestor
    auth: Authenticator
    # One registry per Services (not the process-global default), so apps never collide.
    metrics: Metrics
    audit: AuditLog
    freshness: Freshness
    reads: AuditedReads  # search, document and count reads, audited: what the read routes call
    writes: WriteService  # every caller-requested write
    admin: AdminService  # operator reads

    def close(self) -> None:
        self.index.close()
        self.catalog.close()


def build_index(settings: Settings, dim: int) -> ChunkIndex:
    if settings.qdrant.url or settings.qdrant.local_path:
        from retrieval.server_index import QdrantServerIndex

        return QdrantServerIndex(settings.qdrant, dim)
    from retrieval.edge_index import EdgeIndex

    return EdgeIndex(settings.storage.edge_path, dim)


def build_reranker(settings: Settings) -> "Reranker | None":
    if not settings.retrieval.rerank_model:
        return None
    from pathlib import Path

    from retrieval.rerank import CrossEncoderReranker

    return CrossEncoderReranker(Path(settings.retrieval.rerank_model))


def cursor_codec(catalog: Catalog) -> CursorCodec:
    """Search page cursors are signed with one key per deployment, kept in the catalog (the first
    process to start stores a random one), so every process of a deployment accepts them."""
    import os

    return CursorCodec(bytes.fromhex(catalog.meta_value(CURSOR_KEY, os.urandom(32).hex())))


def build_services(settings: Settings, *, embedder: Embedder | None = None) -> Services:
    metrics = Metrics()
    embedder = MeteredEmbedder(embedder or build_embedder(settings.embedder), metrics)
    catalog = Catalog(settings.catalog_url())
    index = build_index(settings, embedder.dim)
    r = settings.retrieval
    bm25 = Bm25Encoder(k1=r.bm25_k1, b=r.bm25_b, avg_len=r.bm25_avg_len, stem=r.bm25_stem, stop_words=r.bm25_stop_words)
    freshness = Freshness(catalog, settings.ingest.source_sla_s)
    metrics.add_collector(lambda: scrape_gauges(freshness, index))
    search = SearchService(r, index, embedder, bm25, build_reranker(settings))
    audit = AuditLog(settings.audit, catalog)
    ingestor = Ingestor(settings.ingest, catalog, index, embedder, bm25, metrics=metrics)
    return Services(
        settings=settings,
        catalog=catalog,
        index=index,
        embedder=embedder,
        bm25=bm25,
        search_unaudited=search,
        ingestor=ingestor,
        auth=build_authenticator(settings.auth, settings.storage.dev_key_path),
        metrics=metrics,
        audit=audit,
        freshness=freshness,
        reads=AuditedReads(search, audit, freshness, metrics, cursor_codec(catalog)),
        writes=WriteService(settings.ingest, catalog, ingestor),
        admin=AdminService(catalog, freshness, audit),
    )
