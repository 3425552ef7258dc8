"""Engine-side benchmark: build an Edge index of N synthetic chunks, then time scoped queries
per mode and ACL selectivity through ``EdgeIndex.search`` (the production call: compiled
filter in every prefetch and at the top level, payload returned), and HNSW recall@10 against
exact search under the most restrictive ACL.

    python -m bench.engine --chunks 100000 --out bench/results
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.corpus import NOW_TS, SELECTIVITY, Seed, generate, load_seed, queries
from core.settings import RetrievalSettings
from core.types import Entitlements, Scope
from retrieval.bm25 import Bm25Encoder
from retrieval.edge_index import EdgeIndex
from retrieval.index import IndexQuery
from retrieval.scope_filter import compile_scope
from retrieval.service import small_scope

RANKING = RetrievalSettings()  # production's ranking settings
EXACT_BELOW = RANKING.exact_below_points  # the production planner's threshold
# Hybrid as production fuses it (``retrieval.fusion``, its leg weights and depth); "hybrid_rrf"
# beside it is the default before relative fusion: RRF k 30, legs of 50.
FUSIONS = {"hybrid": (RANKING.fusion, RANKING.leg_weights(), RANKING.prefetch_limit),
           "hybrid_rrf": ("rrf", (1.0, 1.0), 50)}


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def seed_from_cache(data_dir: Path, scifact: Path, limit: int | None = None) -> Seed:
    """Real SciFact vectors: from the eval's collection when it exists, else embedded (cached)."""
    from bench.corpus import load_seed_from_index

    eval_index = data_dir / "eval" / "scifact-minilm" / "edge"
    if eval_index.exists() and limit is None:
        return load_seed_from_index(eval_index)
    from core.settings import EmbedderSettings
    from retrieval.embedder import build_embedder
    from retrieval.embedding_cache import CachedEmbedder

    emb = CachedEmbedder(build_embedder(EmbedderSettings()), data_dir / "cache" / "embeddings.sqlite3")
    return load_seed(scifact, emb, limit)


def build(path: Path, seed: Seed, n: int, enc: Bm25Encoder) -> dict[str, float]:
    if path.exists():
        shutil.rmtree(path)
    index = EdgeIndex(path, seed.vectors.shape[1])
    t0 = time.perf_counter()
    for batch in generate(seed, n, bm25=enc):
        index.upsert(batch)
    upsert_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    index.optimize()
    optimize_s = time.perf_counter() - t0
    index.close()
    return {"upsert_s": round(upsert_s, 1), "upsert_points_per_s": round(n / upsert_s), "optimize_s": round(optimize_s, 1)}


def measure(path: Path, seed: Seed, n: int, enc: Bm25Encoder, n_queries: int = 300, fresh_days: int = 365) -> dict[str, Any]:
    t0 = time.perf_counter()
    index = EdgeIndex(path, seed.vectors.shape[1])
    reopen_s = time.perf_counter() - t0
    qs = queries(seed, n_queries)
    now = datetime.fromtimestamp(NOW_TS, UTC)
    results: dict[str, Any] = {"reopen_s": round(reopen_s, 2)}
    lat: dict[str, dict[str, dict[str, float]]] = {}
    for label, group in SELECTIVITY.items():
        scope = Scope(Entitlements("bench", "bench", "bench", frozenset({group, "user:bench"})), max_age_s=fresh_days * 86_400)
        flt = compile_scope(scope, now=now)
        lat[label] = {}
        for mode in ("dense", "bm25", "hybrid", "hybrid_rrf"):
            fusion, weights, depth = FUSIONS.get(mode, ("rrf", (1.0, 1.0), RANKING.prefetch_limit))
            times = []
            for i, (text, vec) in enumerate(qs):
                sparse = enc.encode_query(text)
                t = time.perf_counter()
                # as SearchService plans it: exact dense search for small scopes (the estimate is timed too)
                small = mode != "bm25" and small_scope(index, flt, EXACT_BELOW)
                q = IndexQuery(mode=mode.removesuffix("_rrf"), limit=10, dense=vec.tolist(), sparse=sparse,  # type: ignore[arg-type]
                               prefetch_limit=depth, rrf_k=RANKING.rrf_k, exact=small,
                               fusion=fusion, weights=weights)  # type: ignore[arg-type]
                index.search(q, flt)
                if i >= 20:  # warm-up excluded
                    times.append((time.perf_counter() - t) * 1000)
            lat[label][mode] = {"p50_ms": round(statistics.median(times), 3), "p99_ms": round(pct(times, 99), 3),
                                "qps_1_thread": round(1000 / statistics.mean(times), 1)}
    results["latency"] = lat
    results["hybrid_fusion"] = RANKING.fusion
    # Dense recall@10 against exact search per ACL selectivity, with ACORN (the default) and without.
    recall: dict[str, dict[str, float]] = {}
    for label in ("1%", "5%", "10%", "50%"):
        flt = compile_scope(Scope(Entitlements("bench", "bench", "bench", frozenset({SELECTIVITY[label]}))), now=now)
        got: dict[str, list[float]] = {"default": [], "acorn": [], "plain": []}
        small = small_scope(index, flt, EXACT_BELOW)
        for _text, vec in qs[:100]:
            base = dict(mode="dense", limit=10, dense=vec.tolist(), sparse=None, prefetch_limit=50, rrf_k=60)
            exact = {h.id for h in index.search(IndexQuery(**base, exact=True), flt)}  # type: ignore[arg-type]
            for name, acorn, brute in (("default", True, small), ("acorn", True, False), ("plain", False, False)):
                approx = {h.id for h in index.search(IndexQuery(**base, acorn=acorn, exact=brute), flt)}  # type: ignore[arg-type]
                if exact:
                    got[name].append(len(approx & exact) / len(exact))
        recall[label] = {k: round(float(np.mean(v)), 4) for k, v in got.items() if v}
    results["recall_at_10_vs_exact"] = recall
    results["recall_at_10_vs_exact_acl_1pct"] = recall["1%"].get("default")
    results["exact_below_points"] = EXACT_BELOW
    results["points"] = index.size()
    index.close()
    results["index_bytes"] = dir_size(path)
    return results


def index_path(data_dir: Path, chunks: int) -> Path:
    """``<data_dir>/bench/n<chunks>/edge``: its parent doubles as a server data dir for bench.e2e."""
    return data_dir / "bench" / f"n{chunks}" / "edge"


def common_args() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chunks", type=int, default=100_000)
    ap.add_argument("--data-dir", type=Path, default=Path(os.environ.get("CLEARANCE_STORAGE__DATA_DIR", "var")))
    ap.add_argument("--scifact", type=Path, default=Path("../shared/datasets/scifact"))
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    return ap


def main() -> None:
    ap = common_args()
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--reuse", action="store_true", help="measure an index built earlier")
    ap.add_argument("--build-only", action="store_true", help="build (and record the build figures), measure later with --reuse")
    args = ap.parse_args()
    seed = seed_from_cache(args.data_dir, args.scifact)
    enc = Bm25Encoder()
    path = index_path(args.data_dir, args.chunks)
    report: dict[str, Any] = {"chunks": args.chunks, "cores": os.cpu_count(),
                              "when": datetime.now(UTC).isoformat(timespec="seconds")}
    out = args.out / f"engine-{args.chunks}.json"
    if not args.reuse:
        report["build"] = build(path, seed, args.chunks, enc)
        report["build"]["machine_load_1m"] = round(os.getloadavg()[0], 2)  # other work during the build slows it
        if args.build_only:
            args.out.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(report, indent=1))
            return
    elif out.exists() and "build" in json.loads(out.read_text()):
        report["build"] = json.loads(out.read_text())["build"]  # the build this index came from
    report.update(measure(path, seed, args.chunks, enc, args.queries))
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    args.out.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
