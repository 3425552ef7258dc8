"""Qdrant server (or cluster) implementation of ``ChunkIndex`` through qdrant-client: scale-out.

Tests run it against qdrant-client's in-process local mode at small sizes as a stand-in; the
contract suite is what keeps the two backends congruent.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from typing import Any

from qdrant_client import QdrantClient, models

from core.errors import BackendUnavailableError
from core.settings import QdrantSettings
from core.types import SearchMode
from retrieval.engine_filter import FilterDialect, homogeneous, translate
from retrieval.fusion import relative_fusion
from retrieval.index import DENSE, LEGS, SPARSE, IndexHit, IndexPoint, IndexQuery, dense_of, rank_legs, validate_point
from retrieval.payload import FLOAT_FIELDS, KEYWORD_FIELDS, TENANT_FIELD
from retrieval.scope_filter import CompiledFilter
from retrieval.unavailable import engine_call

SERVER_FILTERS: FilterDialect[models.FieldCondition, models.Filter] = FilterDialect(
    match_any=lambda key, values: models.FieldCondition(key=key, match=models.MatchAny(any=homogeneous(values))),
    range=lambda key, gte, lt: models.FieldCondition(key=key, range=models.Range(gte=gte, lt=lt)),
    filter=lambda must, must_not: models.Filter(must=list[Any](must), must_not=list[Any](must_not) or None),
)


def to_server_filter(flt: CompiledFilter) -> models.Filter:
    return translate(flt, SERVER_FILTERS)


def _dense_params(q: IndexQuery) -> models.SearchParams | None:
    if q.exact:
        return models.SearchParams(exact=True)
    acorn = models.AcornSearchParams(enable=True, max_selectivity=q.acorn_max_selectivity) if q.acorn else None
    return models.SearchParams(hnsw_ef=q.hnsw_ef, acorn=acorn) if acorn or q.hnsw_ef else None


def _sparse_params(q: IndexQuery) -> models.SearchParams | None:
    if q.idf_corpus is None:
        return None
    return models.SearchParams(idf=models.IdfCorpusParams(corpus=to_server_filter(q.idf_corpus)))


SCHEMA_METADATA_KEY = "clearance_index_schema"  # in the collection's own metadata


def _connect(settings: QdrantSettings) -> QdrantClient:
    if settings.local_path:
        location = settings.local_path
        return QdrantClient(location=":memory:") if location == ":memory:" else QdrantClient(path=location)
    key = settings.api_key.get_secret_value() if settings.api_key else None
    return QdrantClient(url=settings.url, api_key=key, prefer_grpc=settings.prefer_grpc)


def _recorded_version(client: QdrantClient, collection: str) -> int | None:
    meta = client.get_collection(collection).config.metadata or {}
    return int(meta[SCHEMA_METADATA_KEY]) if SCHEMA_METADATA_KEY in meta else None


def stored_schema(settings: QdrantSettings) -> tuple[bool, int, int | None]:
    """(collection exists, points, recorded schema version) without creating anything: what
    ``clearance db status`` reports."""
    try:
        client = _connect(settings)
        try:
            if not client.collection_exists(settings.collection):
                return False, 0, None
            version = _recorded_version(client, settings.collection)
            return True, int(client.count(settings.collection, exact=True).count), version
        finally:
            client.close()
    except Exception as exc:
        raise BackendUnavailableError(f"Qdrant unavailable: {exc}") from exc


class QdrantServerIndex:
    def __init__(self, settings: QdrantSettings, dim: int) -> None:
        self.dim = dim
        self.collection = settings.collection
        self._local = bool(settings.local_path)
        try:
            self._client = _connect(settings)
            self._ensure_collection()
        except Exception as exc:
            raise BackendUnavailableError(f"Qdrant unavailable: {exc}") from exc

    def _ensure_collection(self) -> None:
        if not self._client.collection_exists(self.collection):
            self._client.create_collection(
                self.collection,
                vectors_config={DENSE: models.VectorParams(size=self.dim, distance=models.Distance.COSINE)},
                sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
            )
        if self._local:
            return  # qdrant-client's local mode ignores payload indexes (and warns)
        # An existing collection gets the indexes a later release added (as the Edge shard does).
        existing = set(self._client.get_collection(self.collection).payload_schema or {})
        for name in KEYWORD_FIELDS:
            if name.value not in existing:
                self._client.create_payload_index(
                    self.collection, name.value,
                    models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=name == TENANT_FIELD or None),
                )
        for name in FLOAT_FIELDS:
            if name.value not in existing:
                self._client.create_payload_index(self.collection, name.value, models.PayloadSchemaType.FLOAT)

    def upsert(self, points: Sequence[IndexPoint]) -> None:
        if not points:
            return
        batch = []
        for p in points:
            validate_point(p, self.dim)
            vec: dict[str, Any] = {DENSE: [float(x) for x in p.dense],
                   SPARSE: models.SparseVector(indices=list(p.sparse.indices), values=list(p.sparse.values))}
            batch.append(models.PointStruct(id=p.id, vector=vec, payload=p.payload))
        with engine_call("qdrant", "upsert"):
            self._client.upsert(self.collection, batch, wait=True)

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            with engine_call("qdrant", "delete"):
                self._client.delete(self.collection, models.PointIdsList(points=list(ids)), wait=True)

    def set_payload(self, ids: Sequence[str], payload: dict[str, Any]) -> None:
        if ids:
            with engine_call("qdrant", "set_payload"):
                self._client.set_payload(self.collection, payload, points=list(ids), wait=True)

    def set_payloads(self, updates: Sequence[tuple[Sequence[str], dict[str, Any]]]) -> None:
        ops = [models.SetPayloadOperation(set_payload=models.SetPayload(payload=payload, points=list(ids)))
               for ids, payload in updates if ids]
        if ops:
            with engine_call("qdrant", "set_payload"):
                self._client.batch_update_points(self.collection, ops, wait=True)

    def optimize(self) -> bool:
        return False  # the server optimizes in the background

    def flush(self) -> None:
        return None  # every write waits for the server (wait=True)

    def close(self) -> None:
        with engine_call("qdrant", "close"):
            self._client.close()

    def writes_held(self) -> AbstractContextManager[None]:
        return nullcontext()  # the server orders writes itself; backups use its snapshots

    def schema_version(self) -> int | None:
        with engine_call("qdrant", "schema_version"):
            return _recorded_version(self._client, self.collection)

    def set_schema_version(self, version: int) -> None:
        with engine_call("qdrant", "schema_version"):
            self._client.update_collection(self.collection, metadata={SCHEMA_METADATA_KEY: version})

    def drop(self) -> None:
        with engine_call("qdrant", "drop"):
            self._client.delete_collection(self.collection)
        self.close()

    def _leg(self, mode: SearchMode, q: IndexQuery) -> tuple[Any, str]:
        if mode == "dense":
            assert q.dense is not None
            return [float(x) for x in q.dense], DENSE
        assert q.sparse is not None
        return models.SparseVector(indices=list(q.sparse.indices), values=list(q.sparse.values)), SPARSE

    def _query(self, mode: SearchMode, q: IndexQuery, f: models.Filter, limit: int, top: bool = True) -> list[IndexHit]:
        vectors = [DENSE] if q.with_dense and top else False
        if mode == "hybrid":
            prefetch = []
            legs: tuple[SearchMode, SearchMode] = ("dense", "bm25")
            for leg in legs:
                vec, using = self._leg(leg, q)
                params = _dense_params(q) if leg == "dense" else _sparse_params(q)
                prefetch.append(models.Prefetch(query=vec, using=using, limit=q.prefetch_limit, filter=f, params=params))
            rrf = models.Rrf(k=q.rrf_k, weights=list(q.weights) if q.weights != (1.0, 1.0) else None)
            res = self._client.query_points(
                self.collection, prefetch=prefetch, query=models.RrfQuery(rrf=rrf), query_filter=f,
                limit=limit, with_payload=True, with_vectors=vectors,
            )
        else:
            vec, using = self._leg(mode, q)
            res = self._client.query_points(self.collection, query=vec, using=using, query_filter=f, limit=limit,
                                            with_payload=True, with_vectors=vectors,
                                            search_params=_dense_params(q) if mode == "dense" else _sparse_params(q))
        return [IndexHit(str(p.id), float(p.score), dict(p.payload or {}), dense=dense_of(p.vector)) for p in res.points]

    def search(self, query: IndexQuery, flt: CompiledFilter) -> list[IndexHit]:
        with engine_call("qdrant", "search"):
            return self._search(query, flt)

    def _search(self, query: IndexQuery, flt: CompiledFilter) -> list[IndexHit]:
        f = to_server_filter(flt)
        if query.mode == "bm25" and query.sparse is not None and not query.sparse.indices:
            return []
        if query.mode == "hybrid" and query.fusion == "relative":
            # Each leg under the same filter, in one round trip; fused here (``retrieval.fusion``).
            requests = []
            for mode in LEGS:
                vec, using = self._leg(mode, query)
                requests.append(models.QueryRequest(
                    query=vec, using=using, filter=f, limit=query.prefetch_limit, with_payload=False,
                    params=_dense_params(query) if mode == "dense" else _sparse_params(query)))
            dense, sparse = ([IndexHit(str(p.id), float(p.score), {}) for p in r.points]
                             for r in self._client.query_batch_points(self.collection, requests))
            fused = relative_fusion(dense, sparse, weights=query.weights, leg_limit=query.prefetch_limit,
                                    limit=query.limit)
            return self._fill(fused, f, query.with_dense)
        hits = self._query(query.mode, query, f, query.limit)
        if not query.with_legs:
            return hits
        if query.mode == "hybrid":
            dense = self._query("dense", query, f, query.prefetch_limit, top=False)
            sparse = self._query("bm25", query, f, query.prefetch_limit, top=False)
            return rank_legs(hits, dense, sparse)
        leg = DENSE if query.mode == "dense" else SPARSE
        return [IndexHit(h.id, h.score, h.payload, {leg: h.score}, {leg: i + 1}, h.dense) for i, h in enumerate(hits)]

    def _fill(self, hits: list[IndexHit], f: models.Filter, with_dense: bool) -> list[IndexHit]:
        """Payloads (and vectors) of the fused hits only, read under the same scope filter: a
        chunk whose ACL changed since the legs ran is dropped, never returned with its new one."""
        if not hits:
            return []
        ids = models.HasIdCondition(has_id=[h.id for h in hits])
        records, _ = self._client.scroll(self.collection, scroll_filter=models.Filter(must=[f, ids]), limit=len(hits),
                                         with_payload=True, with_vectors=[DENSE] if with_dense else False)
        found = {str(r.id): r for r in records}
        return [replace(h, payload=dict(found[h.id].payload or {}), dense=dense_of(found[h.id].vector))
                for h in hits if h.id in found]

    def scroll(self, flt: CompiledFilter, limit: int) -> list[IndexHit]:
        with engine_call("qdrant", "scroll"):
            records, _ = self._client.scroll(self.collection, scroll_filter=to_server_filter(flt), limit=limit,
                                             with_payload=True)
        return [IndexHit(str(r.id), 0.0, dict(r.payload or {})) for r in records]

    def estimate(self, flt: CompiledFilter) -> int:
        with engine_call("qdrant", "count"):
            return int(self._client.count(self.collection, count_filter=to_server_filter(flt), exact=False).count)

    def count(self, flt: CompiledFilter) -> int:
        with engine_call("qdrant", "count"):
            return int(self._client.count(self.collection, count_filter=to_server_filter(flt), exact=True).count)

    def retrieve(self, ids: Sequence[str]) -> list[IndexHit]:
        if not ids:
            return []
        with engine_call("qdrant", "retrieve"):
            records = self._client.retrieve(self.collection, list(ids), with_payload=True)
        return [IndexHit(str(r.id), 0.0, dict(r.payload or {})) for r in records]

    def size(self) -> int:
        with engine_call("qdrant", "size"):
            return int(self._client.count(self.collection, exact=True).count)
