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
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.corpus import NOW_TS, SELECTIVITY, Seed, generate, load_seed, queries
from bench.scopes import SCOPES, effective_share, scope_filter
from core.settings import RetrievalSettings
from core.types import Entitlements, Scope
from retrieval.bm25 import Bm25Encoder
from retrieval.edge_index import EdgeIndex
from retrieval.index import ChunkIndex, IndexQuery
from retrieval.scope_filter import CompiledFilter, compile_scope
from retrieval.service import idf_corpus, plans_exact, probed_size

RANKING = RetrievalSettings()  # production's ranking settings
EXACT_BELOW = RANKING.exact_below_points  # the production planner's threshold
BENCH_SCOPE = Scope(Entitlements("bench", "bench", "bench", frozenset({"user:bench"})))  # its tenant, for idf_corpus
EF_SWEEP = (100, 200, 400)  # ``retrieval.hnsw_ef`` values whose recall and cost are recorded (100: the engine's own)


def planned_query(mode: str, vec: np.ndarray | None, sparse: Any, flt: CompiledFilter, *, index: ChunkIndex,
                  visible: int | None = None, settings: RetrievalSettings = RANKING, limit: int = 10,
                  **overrides: Any) -> IndexQuery:
    """The ``IndexQuery`` ``SearchService`` builds for this mode and scope (exact or graph search
    from the probed scope size, ``visible`` when already known; fusion, leg weights and depth,
    ACORN threshold, HNSW ef; the IDF corpus, sampled or not, probed on ``index`` as the service
    does), with ``overrides`` for the variants compared."""
    if visible is None and vec is not None and "exact" not in overrides:
        visible = probed_size(index, flt)
    corpus = (idf_corpus(settings, BENCH_SCOPE, flt, index, visible) if sparse is not None and "idf_corpus" not in overrides
              else None)
    q = IndexQuery(mode=mode, limit=limit, dense=vec.tolist() if vec is not None else None, sparse=sparse,  # type: ignore[arg-type]
                   prefetch_limit=settings.prefetch_limit, rrf_k=settings.rrf_k, weights=settings.leg_weights(),
                   fusion=settings.fusion, acorn=settings.acorn, acorn_max_selectivity=settings.acorn_max_selectivity,
                   hnsw_ef=settings.hnsw_ef, exact=vec is not None and visible is not None and plans_exact(settings, visible),
                   idf_corpus=corpus)
    return replace(q, **overrides)


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


def _timed(fn: Any, qs: list[tuple[str, np.ndarray]], warmup: int = 20) -> dict[str, float]:
    times = []
    for i, (text, vec) in enumerate(qs):
        t = time.perf_counter()
        fn(text, vec)
        if i >= warmup:
            times.append((time.perf_counter() - t) * 1000)
    return {"p50_ms": round(statistics.median(times), 3), "p99_ms": round(pct(times, 99), 3),
            "qps_1_thread": round(1000 / statistics.mean(times), 1)}


def measure(path: Path, seed: Seed, n: int, enc: Bm25Encoder, n_queries: int = 300, fresh_days: int = 365,
            recall_queries: int = 100) -> dict[str, Any]:
    t0 = time.perf_counter()
    index = EdgeIndex(path, seed.vectors.shape[1])
    reopen_s = time.perf_counter() - t0
    qs = queries(seed, n_queries)
    now = datetime.fromtimestamp(NOW_TS, UTC)
    results: dict[str, Any] = {"reopen_s": round(reopen_s, 2), "settings": {
        "fusion": RANKING.fusion, "prefetch_limit": RANKING.prefetch_limit, "idf_scope": RANKING.idf_scope,
        "hnsw_ef": RANKING.hnsw_ef, "acorn_max_selectivity": RANKING.acorn_max_selectivity, "exact_below_points": EXACT_BELOW}}
    sparse = {t: enc.encode_query(t) for t, _ in qs}  # encoded once, outside the timed query
    lat: dict[str, dict[str, dict[str, float]]] = {}
    for label, group in SELECTIVITY.items():
        scope = Scope(Entitlements("bench", "bench", "bench", frozenset({group, "user:bench"})), max_age_s=fresh_days * 86_400)
        flt = compile_scope(scope, now=now)
        lat[label] = {}
        # As SearchService plans it, the scope probe timed with the query; "hybrid_global_idf"
        # is the same query with the engine's collection-wide IDF, to show what visible IDF costs.
        variants: list[tuple[str, dict[str, Any]]] = [
            ("dense", {}), ("bm25", {}), ("hybrid", {}), ("hybrid_global_idf", {"idf_corpus": None})]
        for mode, overrides in variants:
            base = mode.removesuffix("_global_idf")
            lat[label][mode] = _timed(lambda text, vec: index.search(planned_query(  # noqa: B023
                base, vec if base != "bm25" else None, sparse[text] if base != "dense" else None, flt,  # noqa: B023
                index=index, **overrides), flt), qs)  # noqa: B023
    results["latency"] = lat
    results["hybrid_fusion"] = RANKING.fusion
    for share in ("10%", "95%"):  # a narrow scope, and a broad one whose visible IDF is sampled
        results[f"profile_{share.removesuffix('%')}pct"] = profile(index, enc, qs, compile_scope(Scope(Entitlements(
            "bench", "bench", "bench", frozenset({SELECTIVITY[share], "user:bench"})), max_age_s=fresh_days * 86_400), now=now))
    results["recall_full_scope"] = recall_full_scope(index, n, qs[:recall_queries])
    results["exact_below_points"] = EXACT_BELOW
    results["points"] = index.size()
    index.close()
    results["index_bytes"] = dir_size(path)
    return results


def profile(index: EdgeIndex, enc: Bm25Encoder, qs: list[tuple[str, np.ndarray]], flt: CompiledFilter) -> dict[str, Any]:
    """Where a production hybrid query's engine time goes, piece by piece, for one scope: the
    planner's estimate, the exact count of the scope (what IDF over all visible chunks has to
    compute per query), each leg alone (BM25 with the production IDF corpus, sampled where the
    scope is large, with all visible chunks, and with the whole index), and the payload read of
    the returned chunks."""
    visible = probed_size(index, flt)
    sparse = {t: enc.encode_query(t) for t, _ in qs}
    hits = {t: index.search(planned_query("hybrid", v, sparse[t], flt, index=index, visible=visible, limit=15, with_dense=True), flt)
            for t, v in qs}
    from retrieval.edge_index import to_edge_filter

    f = to_edge_filter(flt)
    parts = {
        "estimate": lambda t, v: index.estimate(flt),
        "count_exact": lambda t, v: index.count(flt),
        "probe_count": lambda t, v: probed_size(index, flt),  # what sizes the IDF sample
        "dense_leg": lambda t, v: index.search(planned_query("dense", v, None, flt, index=index, visible=visible,
                                                             limit=RANKING.prefetch_limit), flt),
        "bm25_leg_visible_idf": lambda t, v: index.search(planned_query("bm25", None, sparse[t], flt, index=index, visible=visible,
                                                                        limit=RANKING.prefetch_limit), flt),
        "bm25_leg_visible_idf_unsampled": lambda t, v: index.search(planned_query(
            "bm25", None, sparse[t], flt, index=index, visible=visible, limit=RANKING.prefetch_limit, idf_corpus=flt), flt),
        "bm25_leg_global_idf": lambda t, v: index.search(planned_query("bm25", None, sparse[t], flt, index=index, visible=visible,
                                                                       limit=RANKING.prefetch_limit, idf_corpus=None), flt),
        "hybrid": lambda t, v: index.search(planned_query("hybrid", v, sparse[t], flt, index=index, visible=visible, limit=15,
                                                          with_dense=True), flt),
        "fill_15": lambda t, v: index._fill(hits[t], f, True),
    }
    return {"visible_estimate": index.estimate(flt), "exact_dense": plans_exact(RANKING, visible), "probed_size": visible,
            "idf_sampled": visible > RANKING.idf_sample_points > 0, **{name: _timed(fn, qs) for name, fn in parts.items()}}


def recall_full_scope(index: EdgeIndex, n: int, qs: list[tuple[str, np.ndarray]]) -> dict[str, Any]:
    """Dense recall@10 against exact search under the whole compiled scope (ACL, deny, tenant,
    freshness) at effective shares from 0.5 % to 95 %, with the production plan, for each HNSW ef
    swept (``retrieval.hnsw_ef``), with the dense query's p50."""
    out: dict[str, Any] = {}
    for label, group, days, denied in SCOPES:
        flt = scope_filter(group, days, denied)
        visible = probed_size(index, flt)
        truth = [{h.id for h in index.search(planned_query("dense", v, None, flt, index=index, visible=visible, exact=True), flt)}
                 for _t, v in qs]
        row: dict[str, Any] = {"effective_share": round(effective_share(n, group, days, denied), 4),
                               "exact_dense": plans_exact(RANKING, visible)}
        for ef in EF_SWEEP:
            got: list[float] = []
            times: list[float] = []
            for (_t, v), want in zip(qs, truth):
                t = time.perf_counter()
                hits = index.search(planned_query("dense", v, None, flt, index=index, visible=visible, hnsw_ef=ef), flt)
                times.append((time.perf_counter() - t) * 1000)
                if want:
                    got.append(len({h.id for h in hits} & want) / len(want))
            row[f"ef_{ef}"] = {"recall_at_10": round(float(np.mean(got)), 4),
                                            "dense_p50_ms": round(statistics.median(times), 3),
                                            "dense_p99_ms": round(pct(times, 99), 3)}
        out[label] = row
        print(label, json.dumps(row), flush=True)
    return out


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
        report["build"]["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # seed + build
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
