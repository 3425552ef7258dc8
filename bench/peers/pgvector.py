"""The peer: PostgreSQL + pgvector (HNSW) + full-text search, loaded with the benchmark corpus.

The same points as the Edge index (``bench.corpus.generate``: ids, text, vectors, ACL allow and
deny, tenant, modified time), in one table with the indexes a competent PostgreSQL user would
build: HNSW on the vector (cosine, m 16, ef_construction 100: Qdrant's defaults), GIN on a
``tsvector`` of the text, GIN on the allow and deny arrays, B-tree on the modified time. Every
query carries the same scope in every leg (tenant, allow ∩ principals, no deny, freshness).
Filtered HNSW uses ``hnsw.iterative_scan = relaxed_order`` so filtered queries return k rows.

pgvector comes from Debian's source package (``bench/peers/build_pgvector.sh``); the database is
a scratch one (``clearance_peer`` on the local server) dropped and re-created by ``load``.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from bench.corpus import chunk_number
from retrieval.index import IndexPoint
from retrieval.payload import ChunkPayload

DB = "clearance_peer"
ADMIN_DSN = "host=127.0.0.1 user=postgres dbname=test"


@dataclass(frozen=True)
class PeerScope:
    tenant: str
    principals: list[str]
    min_modified_ts: float | None


def _vec(v: Sequence[float]) -> str:
    return "[" + ",".join(f"{x:.6f}" for x in v) + "]"


def _scope_sql(scope: PeerScope) -> tuple[str, list[Any]]:
    sql = "tenant = %s AND allow && %s::text[] AND NOT (deny && %s::text[])"
    args: list[Any] = [scope.tenant, scope.principals, scope.principals]
    if scope.min_modified_ts is not None:
        sql += " AND modified_ts >= %s"
        args.append(scope.min_modified_ts)
    return sql, args


def or_query(text: str) -> str:
    """An OR of the query's words as a tsquery source (``plainto``'s AND finds nothing for most
    six-word queries; the OR is the usable lexical leg)."""
    words = ["".join(c for c in w if c.isalnum()) for w in text.split()]
    return " | ".join(w for w in words if w)


class PgVectorPeer:
    def __init__(self, dim: int, dsn: str = f"host=127.0.0.1 user=postgres dbname={DB}") -> None:
        self.dim = dim
        self.dsn = dsn
        self.conn: psycopg.Connection[Any] | None = None

    # -- build ----------------------------------------------------------------------------------
    def load(self, batches: Iterable[list[IndexPoint]]) -> dict[str, float]:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
            admin.execute(f"CREATE DATABASE {DB}")
        conn = self.connect()
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute(f"""CREATE TABLE chunks (id bigint PRIMARY KEY, tenant text NOT NULL, text text NOT NULL,
                         tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED,
                         emb vector({self.dim}) NOT NULL, allow text[] NOT NULL, deny text[] NOT NULL,
                         modified_ts double precision NOT NULL)""")
        t0 = time.perf_counter()
        n = 0
        for batch in batches:
            buf = io.StringIO()
            for p in batch:
                pl = ChunkPayload.from_index(p.payload)
                row = [str(chunk_number(p.id)), pl.tenant, _copy_text(pl.text), _vec(p.dense),
                       "{" + ",".join(sorted(pl.acl.allow)) + "}", "{" + ",".join(sorted(pl.acl.deny)) + "}",
                       repr(pl.modified_at.timestamp())]
                buf.write("\t".join(row) + "\n")
                n += 1
            with conn.cursor() as cur, cur.copy("COPY chunks (id, tenant, text, emb, allow, deny, modified_ts) FROM STDIN") as cp:
                cp.write(buf.getvalue())
        conn.commit()
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        conn.execute("SET maintenance_work_mem = '2GB'")
        conn.execute("SET max_parallel_maintenance_workers = 1")
        conn.execute("CREATE INDEX chunks_emb ON chunks USING hnsw (emb vector_cosine_ops) WITH (m = 16, ef_construction = 100)")
        hnsw_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        conn.execute("CREATE INDEX chunks_tsv ON chunks USING gin (tsv)")
        conn.execute("CREATE INDEX chunks_allow ON chunks USING gin (allow)")
        conn.execute("CREATE INDEX chunks_deny ON chunks USING gin (deny)")
        conn.execute("CREATE INDEX chunks_modified ON chunks (modified_ts)")
        conn.execute("CREATE INDEX chunks_tenant ON chunks (tenant)")
        conn.commit()
        other_s = time.perf_counter() - t0
        with psycopg.connect(self.dsn, autocommit=True) as c2:
            c2.execute("VACUUM ANALYZE chunks")
            size = c2.execute("SELECT pg_database_size(current_database())").fetchone()
        return {"points": n, "load_s": round(load_s, 1), "hnsw_build_s": round(hnsw_s, 1),
                "other_indexes_s": round(other_s, 1), "database_bytes": int(size[0]) if size else 0}

    def connect(self) -> psycopg.Connection[Any]:
        if self.conn is None:
            self.conn = psycopg.connect(self.dsn)
            self.conn.execute("SET hnsw.iterative_scan = relaxed_order")
            self.conn.execute("SET hnsw.ef_search = 50")  # Edge's prefetch depth; the dense leg asks 50 rows
            self.conn.commit()
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    # -- queries --------------------------------------------------------------------------------
    def dense(self, vec: Sequence[float], scope: PeerScope, limit: int = 10, *, exact: bool = False) -> list[int]:
        where, args = _scope_sql(scope)
        conn = self.connect()
        with conn.cursor() as cur:
            if exact:  # the truth for recall: no index, the scope applied to every row
                cur.execute("SET LOCAL enable_indexscan = off")
            cur.execute(f"SELECT id FROM chunks WHERE {where} ORDER BY emb <=> %s::vector LIMIT %s",
                        [*args, _vec(vec), limit])
            rows = [r[0] for r in cur.fetchall()]
        conn.commit()
        return rows

    def hybrid(self, text: str, vec: Sequence[float], scope: PeerScope, limit: int = 10, *,
               lexical: str = "or", depth: int = 50, rrf_k: int = 60) -> list[int]:
        """RRF over the dense and lexical legs (``lexical``: ``or`` = an OR-ed ``to_tsquery``,
        ``and`` = ``websearch_to_tsquery``), the scope in both legs."""
        where, args = _scope_sql(scope)
        tsq = "to_tsquery('english', %s)" if lexical == "or" else "websearch_to_tsquery('english', %s)"
        q = or_query(text) if lexical == "or" else text
        sql = f"""
        WITH d AS (SELECT id, row_number() OVER (ORDER BY emb <=> %s::vector) AS r FROM
                     (SELECT id, emb FROM chunks WHERE {where} ORDER BY emb <=> %s::vector LIMIT %s) x),
             l AS (SELECT id, row_number() OVER (ORDER BY rank DESC, id) AS r FROM
                     (SELECT id, ts_rank_cd(tsv, q) AS rank FROM chunks, {tsq} q
                      WHERE {where} AND tsv @@ q ORDER BY rank DESC, id LIMIT %s) y)
        SELECT coalesce(d.id, l.id) AS id,
               coalesce(1.0 / (%s + d.r), 0) + coalesce(1.0 / (%s + l.r), 0) AS score
        FROM d FULL OUTER JOIN l ON d.id = l.id ORDER BY score DESC, id LIMIT %s"""
        conn = self.connect()
        with conn.cursor() as cur:
            cur.execute(sql, [_vec(vec), *args, _vec(vec), depth, q, *args, depth, rrf_k, rrf_k, limit])
            rows = [r[0] for r in cur.fetchall()]
        conn.commit()
        return rows


def _copy_text(s: str) -> str:
    return s.replace("\\", "\\\\").replace("\t", " ").replace("\n", " ").replace("\r", " ")
