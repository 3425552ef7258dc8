"""Qdrant Edge (in-process) implementation of ``ChunkIndex``: the embedded default.

Edge allows one process per shard (a second open fails on the WAL lock), so the process that
opens it owns it; see the README's "Who owns the index".
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import qdrant_edge as qe

from core.errors import BackendUnavailableError
from core.types import SearchMode
from retrieval.engine_filter import FilterDialect, homogeneous, translate
from retrieval.fusion import relative_fusion
from retrieval.index import DENSE, LEGS, SPARSE, IndexHit, IndexPoint, IndexQuery, dense_of, rank_legs, validate_point
from retrieval.payload import FLOAT_FIELDS, KEYWORD_FIELDS, TENANT_FIELD
from retrieval.scope_filter import CompiledFilter
from retrieval.unavailable import engine_call

EDGE_FILTERS: FilterDialect[qe.FieldCondition, qe.Filter] = FilterDialect(
    match_any=lambda key, values: qe.FieldCondition(key=key, match=qe.MatchAny(any=homogeneous(values))),
    range=lambda key, gte, lt: qe.FieldCondition(key=key, range=qe.RangeFloat(gte=gte, lt=lt)),
    filter=lambda must, must_not: qe.Filter(must=list[Any](must), must_not=list[Any](must_not) or None),
)


def to_edge_filter(flt: CompiledFilter) -> qe.Filter:
    return translate(flt, EDGE_FILTERS)


def _dense_params(q: IndexQuery) -> qe.SearchParams | None:
    if q.exact:
        return qe.SearchParams(exact=True)
    acorn = qe.AcornSearchParams(enable=True, max_selectivity=q.acorn_max_selectivity) if q.acorn else None
    return qe.SearchParams(hnsw_ef=q.hnsw_ef, acorn=acorn) if acorn or q.hnsw_ef else None


def _id(pid: Any) -> str:
    return str(pid) if isinstance(pid, uuid.UUID) else str(pid)


def _sparse_params(q: IndexQuery) -> qe.SearchParams | None:
    if q.idf_corpus is None:
        return None
    return qe.SearchParams(idf=qe.IdfParams(corpus=to_edge_filter(q.idf_corpus)))


# Edge keeps no metadata of ours, so the version is a file in the shard folder: it travels with
# every copy and backup of the shard (Edge ignores files it does not own).
SCHEMA_MARKER = "clearance-index.json"


def read_schema_marker(shard_dir: Path) -> int | None:
    """The schema version recorded in the shard folder; None where none is (a new or 0.1.0
    index). Readable without opening the shard, which a running server may own."""
    marker = shard_dir / SCHEMA_MARKER
    return int(json.loads(marker.read_text())["schema"]) if marker.exists() else None


def write_schema_marker(shard_dir: Path, version: int) -> None:
    marker = shard_dir / SCHEMA_MARKER
    tmp = marker.with_name(f"{marker.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"schema": version}) + "\n")
    os.replace(tmp, marker)


class EdgeIndex:
    def __init__(self, path: Path, dim: int) -> None:
        self.dim = dim
        self.path = path
        self._write_lock = threading.Lock()
        config = qe.EdgeConfig(
            vectors={DENSE: qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine)},
            sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
        )
        path.mkdir(parents=True, exist_ok=True)
        try:
            if any(path.iterdir()):
                self._shard = qe.EdgeShard.load(str(path), config)
            else:
                self._shard = qe.EdgeShard.create(str(path), config)
        except Exception as exc:  # the WAL lock error when another process owns the shard
            raise BackendUnavailableError(f"cannot open the Edge index at {path}: {exc}", code="index_locked") from exc
        self._ensure_indexes()

    def _ensure_indexes(self) -> None:
        existing = set(self._shard.info().payload_schema)
        with self._write_lock:
            for name in KEYWORD_FIELDS:
                if name not in existing:
                    params = qe.KeywordIndexParams(is_tenant=name == TENANT_FIELD or None, enable_hnsw=False)
                    self._shard.update(qe.UpdateOperation.create_field_index(name.value, params))
            for name in FLOAT_FIELDS:
                if name not in existing:
                    self._shard.update(qe.UpdateOperation.create_field_index(name.value, qe.FloatIndexParams(enable_hnsw=False)))

    # -- writes ---------------------------------------------------------------------------
    def upsert(self, points: Sequence[IndexPoint]) -> None:
        if not points:
            return
        batch = []
        for p in points:
            validate_point(p, self.dim)
            vec: dict[str, Any] = {DENSE: [float(x) for x in p.dense],
                                   SPARSE: qe.SparseVector(list(p.sparse.indices), list(p.sparse.values))}
            batch.append(qe.Point(p.id, vec, p.payload))
        with self._write_lock, engine_call("edge", "upsert"):
            self._shard.update(qe.UpdateOperation.upsert_points(batch))

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            with self._write_lock, engine_call("edge", "delete"):
                self._shard.update(qe.UpdateOperation.delete_points(list(ids)))

    def set_payload(self, ids: Sequence[str], payload: dict[str, Any]) -> None:
        self.set_payloads([(ids, payload)])

    def set_payloads(self, updates: Sequence[tuple[Sequence[str], dict[str, Any]]]) -> None:
        updates = [(ids, payload) for ids, payload in updates if ids]
        if updates:
            with self._write_lock, engine_call("edge", "set_payload"):  # in process: no round trips to save
                for ids, payload in updates:
                    self._shard.update(qe.UpdateOperation.set_payload(list(ids), payload))

    def optimize(self) -> bool:
        with self._write_lock, engine_call("edge", "optimize"):
            return bool(self._shard.optimize())

    def flush(self) -> None:
        with engine_call("edge", "flush"):
            self._shard.flush()

    def close(self) -> None:
        self._shard.flush()
        self._shard.close()

    @contextmanager
    def writes_held(self) -> Iterator[None]:
        with self._write_lock:  # every mutation, optimize() included, takes it
            yield

    def schema_version(self) -> int | None:
        return read_schema_marker(self.path)

    def set_schema_version(self, version: int) -> None:
        write_schema_marker(self.path, version)

    def drop(self) -> None:
        self.close()
        shutil.rmtree(self.path)

    # -- reads ----------------------------------------------------------------------------
    def _leg(self, mode: SearchMode, q: IndexQuery) -> qe.Query:
        if mode == "dense":
            assert q.dense is not None
            return qe.Query.Nearest([float(x) for x in q.dense], using=DENSE)
        assert q.sparse is not None
        return qe.Query.Nearest(qe.SparseVector(list(q.sparse.indices), list(q.sparse.values)), using=SPARSE)

    def _request(self, mode: SearchMode, q: IndexQuery, f: qe.Filter, limit: int, top: bool = True,
                 payload: bool = True) -> qe.QueryRequest:
        vectors = [DENSE] if q.with_dense and top else None
        if mode != "hybrid":
            params = _dense_params(q) if mode == "dense" else _sparse_params(q)
            return qe.QueryRequest(limit=limit, query=self._leg(mode, q), filter=f, with_payload=payload,
                                   with_vector=vectors, params=params)
        weights = list(q.weights) if q.weights != (1.0, 1.0) else None
        return qe.QueryRequest(
            limit=limit,
            # The stubs type Fusion.Rrf as its own class; the engine takes it as a query (checked by calling).
            query=cast(qe.Fusion, qe.Fusion.Rrf(k=q.rrf_k, weights=weights)),
            prefetches=[
                qe.Prefetch(limit=q.prefetch_limit, query=self._leg("dense", q), filter=f, params=_dense_params(q)),
                qe.Prefetch(limit=q.prefetch_limit, query=self._leg("bm25", q), filter=f, params=_sparse_params(q)),
            ],
            filter=f,
            with_payload=True,
            with_vector=vectors,
        )

    def search(self, query: IndexQuery, flt: CompiledFilter) -> list[IndexHit]:
        with engine_call("edge", "search"):
            return self._search(query, flt)

    def _search(self, query: IndexQuery, flt: CompiledFilter) -> list[IndexHit]:
        f = to_edge_filter(flt)
        if query.mode == "bm25" and query.sparse is not None and not query.sparse.indices:
            return []
        if query.mode == "hybrid" and query.fusion == "relative":
            # Each leg under the same filter, in one engine call; fused here (``retrieval.fusion``).
            legs = [self._request(leg, query, f, query.prefetch_limit, top=False, payload=False) for leg in LEGS]
            dense, sparse = (self._hits(r) for r in self._shard.query_batch(qe.QueryBatchRequest(legs)))
            fused = relative_fusion(dense, sparse, weights=query.weights, leg_limit=query.prefetch_limit,
                                    limit=query.limit)
            return self._fill(fused, f, query.with_dense)
        main = self._request(query.mode, query, f, query.limit)
        if query.mode == "hybrid" and query.with_legs:
            legs = [self._request("dense", query, f, query.prefetch_limit, top=False),
                    self._request("bm25", query, f, query.prefetch_limit, top=False)]
            fused, dense, sparse = (self._hits(r) for r in self._shard.query_batch(qe.QueryBatchRequest([main, *legs])))
            return rank_legs(fused, dense, sparse)
        hits = self._hits(self._shard.query(main))
        if query.with_legs:
            leg = DENSE if query.mode == "dense" else SPARSE
            return [IndexHit(h.id, h.score, h.payload, {leg: h.score}, {leg: i + 1}, h.dense) for i, h in enumerate(hits)]
        return hits

    def _fill(self, hits: list[IndexHit], f: qe.Filter, with_dense: bool) -> list[IndexHit]:
        """Payloads (and vectors) of the fused hits only, read under the same scope filter: a
        chunk whose ACL changed since the legs ran is dropped, never returned with its new one."""
        if not hits:
            return []
        ids = qe.HasIdCondition({uuid.UUID(h.id) for h in hits})
        records, _ = self._shard.scroll(qe.ScrollRequest(limit=len(hits), filter=qe.Filter(must=[f, ids]),
                                                         with_payload=True, with_vector=[DENSE] if with_dense else None))
        found = {_id(r.id): r for r in records}
        return [replace(h, payload=dict(found[h.id].payload or {}), dense=dense_of(found[h.id].vector))
                for h in hits if h.id in found]

    @staticmethod
    def _hits(points: list[Any]) -> list[IndexHit]:
        return [IndexHit(_id(p.id), float(p.score), dict(p.payload or {}), dense=dense_of(p.vector)) for p in points]

    def scroll(self, flt: CompiledFilter, limit: int) -> list[IndexHit]:
        with engine_call("edge", "scroll"):
            records, _ = self._shard.scroll(qe.ScrollRequest(limit=limit, filter=to_edge_filter(flt), with_payload=True))
        return [IndexHit(_id(r.id), 0.0, dict(r.payload or {})) for r in records]

    def estimate(self, flt: CompiledFilter) -> int:
        with engine_call("edge", "count"):
            return int(self._shard.count(qe.CountRequest(exact=False, filter=to_edge_filter(flt))))

    def count(self, flt: CompiledFilter) -> int:
        with engine_call("edge", "count"):
            return int(self._shard.count(qe.CountRequest(exact=True, filter=to_edge_filter(flt))))

    def retrieve(self, ids: Sequence[str]) -> list[IndexHit]:
        if not ids:
            return []
        with engine_call("edge", "retrieve"):
            records = self._shard.retrieve(list(ids), True, False)
        return [IndexHit(_id(r.id), 0.0, dict(r.payload or {})) for r in records]

    def size(self) -> int:
        with engine_call("edge", "size"):
            return int(self._shard.info().points_count)
