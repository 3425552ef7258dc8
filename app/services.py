"""Composition root: the only place that picks implementations from settings."""

from __future__ import annotations

from dataclasses import dataclass

from app.admin import AdminService
from app.connectors import ConnectorSync
from app.directory import ScimEndpoint
from app.gauges import scrape_gauges
from app.identity import IdentityMap
from app.index_schema import check_index_schema
from app.reads import AuditedReads
from app.scheduler import connector_gauges
from app.sources import SourceRegistry
from app.writes import WriteService
from auth.authenticator import Authenticator, build_authenticator
from auth.directory import DirectoryExpander
from core.metrics import Metrics
from core.settings import Settings
from ingest.contracts import declared_metadata
from ingest.pipeline import Ingestor
from retrieval.bm25 import Bm25Encoder
from retrieval.cursor import CursorCodec
from retrieval.embedder import Embedder, build_embedder
from retrieval.index import ChunkIndex
from retrieval.metered import MeteredEmbedder
from retrieval.rerank import Reranker
from retrieval.service import SearchService
from store.audit import AuditLog, WriteAudit
from store.catalog import Catalog
from store.directory import DirectoryStore
from store.freshness import Freshness

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
    write_audit: WriteAudit  # who changed what (every write, every refused write)
    freshness: Freshness
    reads: AuditedReads  # search, document and count reads, audited: what the read routes call
    writes: WriteService  # every caller-requested write
    sources: SourceRegistry  # registered sources, their writers and roots
    admin: AdminService  # operator reads
    # The identity directory (SCIM users and groups) and its SCIM endpoint (None: SCIM off, 404).
    directory: DirectoryStore | None = None
    scim: ScimEndpoint | None = None
    # Connector sources: content and permission syncs (app.connectors), run by app.scheduler.
    connectors: ConnectorSync | None = None

    def close(self) -> None:
        self.index.close()
        self.catalog.close()


def build_index(settings: Settings, dim: int) -> ChunkIndex:
    if settings.qdrant.url or settings.qdrant.local_path:
        from retrieval.server_index import QdrantServerIndex

        return QdrantServerIndex(settings.qdrant, dim)
    from retrieval.edge_index import EdgeIndex

    return EdgeIndex(settings.storage.edge_path, dim)


def build_reranker(settings: Settings) -> Reranker | None:
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


def open_catalog_and_index(settings: Settings, dim: int, *, check_index: bool = True) -> tuple[Catalog, ChunkIndex]:
    """The catalog (migrated or checked, ``db.auto_migrate``) and the index (its schema version
    checked unless ``check_index`` is off); nothing is left open when either fails."""
    catalog = Catalog(settings.catalog_url(), auto_migrate=settings.auto_migrate())
    try:
        index = build_index(settings, dim)
    except BaseException:
        catalog.close()
        raise
    if check_index:
        try:
            check_index_schema(settings, index)
        except BaseException:
            index.close()
            catalog.close()
            raise
    return catalog, index


def build_services(settings: Settings, *, embedder: Embedder | None = None, check_index: bool = True) -> Services:
    """Everything a process needs. The catalog schema is upgraded or checked (``db.auto_migrate``,
    ``store.migrate``) and the index's schema version checked (``app.index_schema``; only
    `clearance reindex` opens an index of another version, with ``check_index=False``)."""
    metrics = Metrics()
    embedder = MeteredEmbedder(embedder or build_embedder(settings.embedder), metrics)
    catalog, index = open_catalog_and_index(settings, embedder.dim, check_index=check_index)
    r = settings.retrieval
    bm25 = Bm25Encoder(k1=r.bm25_k1, b=r.bm25_b, avg_len=r.bm25_avg_len, stem=r.bm25_stem, stop_words=r.bm25_stop_words)
    freshness = Freshness(catalog, settings.ingest.source_sla_s)
    metrics.add_collector(lambda: scrape_gauges(freshness, index))
    search = SearchService(r, index, embedder, bm25, build_reranker(settings),
                           metadata_fields=declared_metadata(settings.ingest.contracts))
    audit = AuditLog(settings.audit, catalog)
    write_audit = WriteAudit(catalog)
    directory = DirectoryStore(catalog)
    # Group expansion per issuer policy (auth.directory; issuers with directory "off" are untouched).
    expander = DirectoryExpander(directory, settings.directory,
                                 dev_issuer=settings.auth.dev_issuer if settings.auth.mode == "dev" else "")
    sources = SourceRegistry(settings, catalog, write_audit)
    ingestor = Ingestor(settings.ingest, catalog, index, embedder, bm25, metrics=metrics)
    connectors = ConnectorSync(settings, catalog, ingestor, IdentityMap(settings.identity, directory), metrics=metrics,
                               write_audit=write_audit, factories=sources.connector_factories)
    metrics.add_collector(lambda: connector_gauges(connectors.store))
    return Services(
        settings=settings,
        catalog=catalog,
        index=index,
        embedder=embedder,
        bm25=bm25,
        search_unaudited=search,
        ingestor=ingestor,
        auth=build_authenticator(settings.auth, settings.storage.dev_key_path, directory=expander),
        metrics=metrics,
        audit=audit,
        write_audit=write_audit,
        freshness=freshness,
        reads=AuditedReads(search, audit, freshness, metrics, cursor_codec(catalog)),
        writes=WriteService(settings, catalog, ingestor, sources),
        sources=sources,
        admin=AdminService(catalog, freshness, audit, write_audit, sources),
        directory=directory,
        connectors=connectors,
        scim=ScimEndpoint(settings, directory, write_audit) if settings.directory.scim_enabled else None,
    )
