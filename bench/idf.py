"""Cost and effect of entitlement-scoped term statistics (``retrieval.idf_scope``): BM25 IDF over
the caller's visible scope as production plans it (a fixed random sample of the scope above
``retrieval.idf_sample_points`` chunks), over every visible chunk, and the engine's global IDF;
same index, same queries, same run, the variants rotated query by query so drift hits all alike.
For the sampled variant, how far its top 10 is from the unsampled one's (overlap and RBO).

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
from bench.engine import RANKING, common_args, index_path, pct, planned_query, seed_from_cache
from core.types import Entitlements, Scope
from eval.stability import rbo
from retrieval.bm25 import Bm25Encoder
from retrieval.edge_index import EdgeIndex
from retrieval.scope_filter import compile_scope
from retrieval.service import probed_size

VARIANTS = ("sampled", "visible", "global")  # production; every visible chunk; the whole index


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
    out: dict[str, Any] = {"chunks": args.chunks, "queries": len(qs), "freshness_days": 365,
                           "idf_sample_points": RANKING.idf_sample_points}
    for label in ("5%", "50%", "95%"):
        scope = Scope(Entitlements("bench", "bench", "bench", frozenset({SELECTIVITY[label], "user:bench"})),
                      max_age_s=365 * 86_400)
        flt = compile_scope(scope, now=now)
        visible = index.estimate(flt)
        probed = probed_size(index, flt)
        out[label] = {"visible_estimate": visible, "visible_count": index.count(flt), "probed_size": probed,
                      "sampled": probed > RANKING.idf_sample_points > 0}
        for mode in ("bm25", "hybrid"):
            times: dict[str, list[float]] = {v: [] for v in VARIANTS}
            overlap: list[float] = []
            rbos: list[float] = []
            for i, (text, vec) in enumerate(qs):
                sparse = enc.encode_query(text)
                ranked: dict[str, list[str]] = {}
                for which in VARIANTS[i % 3:] + VARIANTS[:i % 3]:
                    over = {} if which == "sampled" else {"idf_corpus": flt if which == "visible" else None}
                    q = planned_query(mode, vec if mode == "hybrid" else None, sparse, flt, index=index, visible=visible, **over)
                    t = time.perf_counter()
                    hits = index.search(q, flt)
                    if i >= 20:
                        times[which].append((time.perf_counter() - t) * 1000)
                    ranked[which] = [h.id for h in hits]
                if ranked["visible"]:
                    overlap.append(len(set(ranked["sampled"]) & set(ranked["visible"])) / len(ranked["visible"]))
                    rbos.append(rbo(ranked["sampled"], ranked["visible"]))
            cell: dict[str, Any] = {w: {"p50_ms": round(statistics.median(v), 3), "p99_ms": round(pct(v, 99), 3)}
                                    for w, v in times.items()}
            for w in ("sampled", "visible"):
                cell[f"ratio_p50_{w}_vs_global"] = round(cell[w]["p50_ms"] / cell["global"]["p50_ms"], 3)
                cell[f"ratio_p99_{w}_vs_global"] = round(cell[w]["p99_ms"] / cell["global"]["p99_ms"], 3)
            cell["sampled_vs_visible_top10_overlap"] = round(statistics.mean(overlap), 4) if overlap else None
            cell["sampled_vs_visible_rbo10"] = round(statistics.mean(rbos), 4) if rbos else None
            out[label][mode] = cell
            print(label, mode, json.dumps(cell), flush=True)
    index.close()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"idf-{args.chunks}.json").write_text(json.dumps(out, indent=1))
    (args.out / f"idf-{args.chunks}.md").write_text(markdown(out))
    print(markdown(out))


def markdown(out: dict[str, Any]) -> str:
    lines = [f"IDF corpora at {out['chunks']:,} chunks, {out['queries']} queries, p50 / p99 ms "
             f"(sampled above {out['idf_sample_points']:,} chunks in scope)", "",
             "| visible | scope (counted) | mode | global | visible, every chunk | sampled | overlap / RBO@10 |",
             "|---|---:|---|---:|---:|---:|---:|"]
    for label in ("5%", "50%", "95%"):
        row = out[label]
        for mode in ("bm25", "hybrid"):
            c = row[mode]
            cells = " | ".join(f"{c[w]['p50_ms']:.1f} / {c[w]['p99_ms']:.1f}" for w in ("global", "visible", "sampled"))
            lines.append(f"| {label} | {row['visible_count']:,} | {mode} | {cells} | "
                         f"{c['sampled_vs_visible_top10_overlap']} / {c['sampled_vs_visible_rbo10']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
