"""Cost of entitlement-scoped term statistics (``retrieval.idf_scope``): BM25 IDF over the
caller's visible scope against the engine's global IDF, same index, same queries, same run, the
two interleaved query by query so drift hits both alike.

    python -m bench.idf --chunks 100000      # needs python -m bench.engine --chunks 100000 --build-only
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from datetime import UTC, datetime
from typing import Any

from bench.corpus import NOW_TS, SELECTIVITY, queries
from bench.engine import EXACT_BELOW, common_args, index_path, pct, seed_from_cache
from core.types import Entitlements, Scope
from retrieval.bm25 import Bm25Encoder
from retrieval.edge_index import EdgeIndex
from retrieval.index import IndexQuery
from retrieval.scope_filter import compile_scope
from retrieval.service import small_scope


def main() -> None:
    ap = common_args()
    ap.add_argument("--queries", type=int, default=300)
    args = ap.parse_args()
    path = index_path(args.data_dir, args.chunks)
    if not path.exists():
        sys.exit(f"build the index first: python -m bench.engine --chunks {args.chunks} --build-only")
    seed = seed_from_cache(args.data_dir, args.scifact)
    enc = Bm25Encoder()  # as bench.engine builds and queries the index
    index = EdgeIndex(path, seed.vectors.shape[1])
    qs = queries(seed, args.queries)
    now = datetime.fromtimestamp(NOW_TS, UTC)
    out: dict[str, Any] = {"chunks": args.chunks, "queries": len(qs), "freshness_days": 365}
    for label in ("5%", "50%", "95%"):
        scope = Scope(Entitlements("bench", "bench", "bench", frozenset({SELECTIVITY[label], "user:bench"})),
                      max_age_s=365 * 86_400)
        flt = compile_scope(scope, now=now)
        small = small_scope(index, flt, EXACT_BELOW)
        out[label] = {}
        for mode in ("bm25", "hybrid"):
            times: dict[str, list[float]] = {"visible": [], "global": []}
            for i, (text, vec) in enumerate(qs):
                sparse = enc.encode_query(text)
                order = ("visible", "global") if i % 2 == 0 else ("global", "visible")
                for which in order:
                    q = IndexQuery(mode=mode, limit=10, dense=vec.tolist(), sparse=sparse, prefetch_limit=50,  # type: ignore[arg-type]
                                   rrf_k=60, exact=small and mode != "bm25",
                                   idf_corpus=flt if which == "visible" else None)
                    t = time.perf_counter()
                    index.search(q, flt)
                    if i >= 20:
                        times[which].append((time.perf_counter() - t) * 1000)
            cell = {w: {"p50_ms": round(statistics.median(v), 3), "p99_ms": round(pct(v, 99), 3)} for w, v in times.items()}
            cell["ratio_p50"] = round(cell["visible"]["p50_ms"] / cell["global"]["p50_ms"], 3)
            cell["ratio_p99"] = round(cell["visible"]["p99_ms"] / cell["global"]["p99_ms"], 3)
            out[label][mode] = cell
    index.close()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"idf-{args.chunks}.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
