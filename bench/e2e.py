"""End-to-end API benchmark: a real ``clearance serve`` on loopback over a bench index, driven by
a load generator in another process (threads with keep-alive HTTP clients) at concurrency 1, 4
and 8. Each request carries a JWT (validated per request), is encoded by the real model and
runs a hybrid + ACL + freshness query. Also measures the floor: query encode time and engine
time in-process, and reports p50 / (encode + engine).

    python -m bench.e2e --chunks 100000 --out bench/results
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.corpus import SELECTIVITY
from bench.corpus import queries as make_queries
from bench.engine import common_args, index_path, pct, planned_query, seed_from_cache
from bench.server import peak_rss_mb, start_server
from core.settings import RetrievalSettings

MAX_AGE_S = 3 * 365 * 86_400


def mint(data_dir: Path, group: str) -> str:
    from auth.dev_issuer import DevIssuer
    from core.settings import AuthSettings

    issuer = DevIssuer(AuthSettings(dev_tenant="bench"), data_dir / "dev-issuer-key.pem")
    return issuer.mint("bench-user", groups=[group.removeprefix("group:")])


def load(url: str, token: str, texts: list[str], concurrency: int, requests: int, max_s: float) -> dict[str, Any]:
    latencies: list[float] = []
    served: list[float] = []  # the service's own took_ms: encode, plan, engine, snippets (no HTTP, token, audit)
    errors = 0
    lock = threading.Lock()
    counter = iter(range(requests))
    deadline = time.time() + max_s

    def worker() -> None:
        nonlocal errors
        with httpx.Client(timeout=30, headers={"authorization": f"Bearer {token}"}) as client:
            for i in counter:
                if time.time() > deadline:
                    return
                body = {"query": texts[i % len(texts)], "top_k": 10, "mode": "hybrid", "max_age": MAX_AGE_S}
                t = time.perf_counter()
                r = client.post(url, json=body)
                dt = (time.perf_counter() - t) * 1000
                with lock:
                    if r.status_code == 200:
                        latencies.append(dt)
                        served.append(float(r.json()["took_ms"]))
                    else:
                        errors += 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"concurrency": concurrency, "requests": len(latencies), "errors": errors,
            "p50_ms": round(statistics.median(latencies), 2), "p99_ms": round(pct(latencies, 99), 2),
            "service_p50_ms": round(statistics.median(served), 2), "service_p99_ms": round(pct(served, 99), 2),
            "qps": round(len(latencies) / wall, 1)}


def floor(data_dir: Path, scifact: Path, texts: list[str], ranking: RetrievalSettings) -> dict[str, float]:
    """Query encode and engine time, in-process, for the same kind of request."""
    from bench.corpus import NOW_TS
    from core.settings import EmbedderSettings
    from core.types import Entitlements, Scope
    from retrieval.bm25 import Bm25Encoder
    from retrieval.edge_index import EdgeIndex
    from retrieval.embedder import MiniLmEmbedder, build_embedder
    from retrieval.scope_filter import compile_scope
    from retrieval.service import probed_size

    emb = build_embedder(EmbedderSettings())  # what the server uses (ONNX Runtime by default)
    enc = Bm25Encoder()
    enc_ms, eng_ms, torch_ms = [], [], []
    vecs = []
    for t in texts[:120]:
        t0 = time.perf_counter()
        vecs.append(emb.embed_query(t))
        enc_ms.append((time.perf_counter() - t0) * 1000)
    reference = MiniLmEmbedder(EmbedderSettings(runtime="torch"))  # for the record: the torch path
    for t in texts[:120]:
        t0 = time.perf_counter()
        reference.embed_query(t)
        torch_ms.append((time.perf_counter() - t0) * 1000)
    del reference
    index = EdgeIndex(data_dir / "edge", 384)
    # the request's scope: 10 % visible, the max_age it sends (three years: every chunk is fresh)
    flt = compile_scope(Scope(Entitlements("b", "b", "bench", frozenset({SELECTIVITY["10%"], "user:bench-user", "tenant:bench"})),
                              max_age_s=MAX_AGE_S), now=datetime.fromtimestamp(NOW_TS, UTC))
    for t, v in zip(texts[:120], vecs):
        sparse = enc.encode_query(t)
        t0 = time.perf_counter()
        visible = probed_size(index, flt)  # the service's planner input, timed with it
        index.search(planned_query("hybrid", v, sparse, flt, index=index, visible=visible, settings=ranking, limit=15,
                                   with_dense=True), flt)
        eng_ms.append((time.perf_counter() - t0) * 1000)
    index.close()
    return {"encode_p50_ms": round(statistics.median(enc_ms[20:]), 2), "engine_p50_ms": round(statistics.median(eng_ms[20:]), 2),
            "encode_torch_p50_ms": round(statistics.median(torch_ms[20:]), 2)}


def main() -> None:
    ap = common_args()
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--max-s", type=float, default=90.0)
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--idf-scope", choices=["visible", "tenant", "global"], default=None,
                    help="run the server (and the floor) with this retrieval.idf_scope; the result file gets a suffix")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    args = ap.parse_args()
    ranking = RetrievalSettings(idf_scope=args.idf_scope) if args.idf_scope else RetrievalSettings()
    server_dir = index_path(args.data_dir, args.chunks).parent
    if not (server_dir / "edge").exists():
        sys.exit(f"build the index first: python -m bench.engine --chunks {args.chunks}")
    seed = seed_from_cache(args.data_dir, args.scifact)
    texts = [t for t, _ in make_queries(seed, 500, rng_seed=5)]
    report: dict[str, Any] = {"chunks": args.chunks, "cores": os.cpu_count(), "acl_visible": "10%",
                              "when": datetime.now(UTC).isoformat(timespec="seconds"), "idf_scope": ranking.idf_scope}
    report["floor"] = floor(server_dir, args.scifact, texts, ranking)
    token = mint(server_dir, SELECTIVITY["10%"])
    t0 = time.perf_counter()
    env = {"CLEARANCE_RETRIEVAL__IDF_SCOPE": args.idf_scope} if args.idf_scope else None
    proc = start_server(server_dir, args.port, env=env)
    report["cold_start_s"] = round(time.perf_counter() - t0, 2)
    try:
        url = f"http://127.0.0.1:{args.port}/v1/search"
        load(url, token, texts[:30], 2, 30, 30)  # warm-up
        report["load"] = [load(url, token, texts, c, args.requests, args.max_s) for c in args.concurrency]
        report["server_peak_rss_mb"] = peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    c1 = report["load"][0]
    report["ratio_to_floor_p50"] = round(c1["p50_ms"] / (report["floor"]["encode_p50_ms"] + report["floor"]["engine_p50_ms"]), 2)
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = f"-idf-{args.idf_scope}" if args.idf_scope else ""
    (args.out / f"e2e-{args.chunks}{suffix}.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
