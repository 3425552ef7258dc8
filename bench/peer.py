"""Clearance's engine beside a real peer (PostgreSQL + pgvector + FTS) on the identical corpus.

Both systems hold the same points (``bench.corpus.generate``) and answer the same queries under
the same scope: tenant, ACL allow ∩ principals, deny, and a freshness clause, so the *whole*
compiled scope sets the selectivity (the ACL share times the fresh share; effective shares from
0.5 % to 95 %, the 15-40 % band included). Per scope:

- latency, alternating timed phases (Clearance, then the peer, per mode): Clearance dense and
  hybrid through ``EdgeIndex.search`` as ``SearchService`` plans it (exact below
  ``exact_below_points``, ACORN up to ``acorn_max_selectivity``), the peer's dense, hybrid with an
  OR-ed tsquery (its usable lexical leg) and hybrid with ``websearch_to_tsquery`` (AND);
- dense recall@10 of each against exact filtered search (Edge's brute force under the full scope;
  the peer's exact scan is checked to agree);
- Clearance's recall and latency for each ``--acorn`` threshold swept (the setting
  ``retrieval.acorn_max_selectivity``) and each ``--ef`` (``retrieval.hnsw_ef``);
- the recall-first planner of each ``--exact-below`` value (``retrieval.exact_below_points``:
  exact search for every scope up to that many chunks): its dense recall, and its dense and
  hybrid latency, timed in the same run after the default's and the peer's phases, since the
  peer reaches 1.000 by scanning.

    bash bench/peers/build_pgvector.sh            # once, as root
    python -m bench.peer --chunks 100000          # -> bench/results/peer-100000.{json,md}
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np

from bench.corpus import NOW_TS, chunk_number, generate, queries
from bench.engine import build, common_args, pct, planned_query, seed_from_cache
from bench.peers.pgvector import PeerScope, PgVectorPeer
from bench.scopes import DAY, SCOPES, effective_share, principals_of, scope_filter
from core.settings import RetrievalSettings
from retrieval.bm25 import Bm25Encoder
from retrieval.edge_index import EdgeIndex
from retrieval.scope_filter import CompiledFilter
from retrieval.service import plans_exact, probed_size


def timed(fn: Callable[[], object], times: list[float]) -> None:
    t = time.perf_counter()
    fn()
    times.append((time.perf_counter() - t) * 1000)


def stats(times: list[float]) -> dict[str, float]:
    return {"p50_ms": round(statistics.median(times), 3), "p99_ms": round(pct(times, 99), 3)}


def main() -> None:
    ap = common_args()
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--recall-queries", type=int, default=100)
    ap.add_argument("--acorn", type=float, nargs="+", default=[0.15, 0.3, 0.5, 1.0],
                    help="acorn_max_selectivity values swept for Clearance's dense recall")
    ap.add_argument("--ef", type=int, nargs="+", default=[300, 400],
                    help="retrieval.hnsw_ef values swept for Clearance's dense recall (at the default ACORN threshold)")
    ap.add_argument("--exact-below", type=int, nargs="*", default=[100_000],
                    help="retrieval.exact_below_points values measured as recall-first planners (recall, dense and hybrid latency)")
    ap.add_argument("--reuse", action="store_true", help="reuse both built indexes")
    ap.add_argument("--build-only", action="store_true", help="build both indexes and record the build figures; measure later with --reuse")
    ap.add_argument("--seed-docs", type=int, default=None, help="embed only this many SciFact documents as the seed (quick runs)")
    args = ap.parse_args()
    n = args.chunks
    seed = seed_from_cache(args.data_dir, args.scifact, args.seed_docs)
    enc = Bm25Encoder()
    dim = seed.vectors.shape[1]
    edge_path = args.data_dir / "bench" / f"peer-n{n}" / "edge"
    peer = PgVectorPeer(dim)
    report: dict[str, Any] = {"chunks": n, "cores": os.cpu_count(), "when": datetime.now(UTC).isoformat(timespec="seconds")}
    out = args.out / f"peer-{n}.json"
    if not args.reuse:
        report["build"] = {"clearance": build(edge_path, seed, n, enc),
                           "peer": peer.load(generate(seed, n, bm25=enc)),
                           "machine_load_1m": round(os.getloadavg()[0], 2)}  # other work during the build slows it
        if args.build_only:
            args.out.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(report, indent=1))
            return
    elif out.exists():
        report["build"] = json.loads(out.read_text()).get("build")
    index = EdgeIndex(edge_path, dim)
    planner = RetrievalSettings()
    recall_first = {n_exact: RetrievalSettings(exact_below_points=n_exact) for n_exact in args.exact_below
                    if n_exact != planner.exact_below_points}
    qs = queries(seed, max(args.queries, args.recall_queries))  # the first --queries are timed
    rows: dict[str, Any] = {}
    try:
        for label, group, days, denied in SCOPES:
            principals = principals_of(group, denied)
            flt = scope_filter(group, days, denied)
            pscope = PeerScope("bench", sorted(principals), NOW_TS - days * DAY if days else None)
            row: dict[str, Any] = {"effective_share": round(effective_share(n, group, days, denied), 4)}
            row.update(latency(index, peer, flt, pscope, qs[:args.queries], enc, planner, recall_first))
            row.update(recall(index, peer, flt, pscope, qs[:args.recall_queries], planner, args.acorn, args.ef, recall_first))
            rows[label] = row
            print(label, json.dumps(row), flush=True)
    finally:
        index.close()
        peer.close()
    report["scopes"] = rows
    report["planner"] = {"exact_below_points": planner.exact_below_points, "acorn_max_selectivity": planner.acorn_max_selectivity,
                         "prefetch_limit": planner.prefetch_limit, "fusion": planner.fusion, "idf_scope": planner.idf_scope,
                         "hnsw_ef": planner.hnsw_ef, "peer_ef_search": 50,
                         "peer_iterative_scan": "relaxed_order"}
    report["queries"] = {"timed": args.queries, "recall": args.recall_queries}
    args.out.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


def latency(index: EdgeIndex, peer: PgVectorPeer, flt: CompiledFilter, pscope: PeerScope, qs: list[tuple[str, np.ndarray]],
            enc: Bm25Encoder, planner: RetrievalSettings,
            recall_first: dict[int, RetrievalSettings] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def planned(mode: str, st: RetrievalSettings) -> Callable[[str, np.ndarray], object]:
        """Clearance's query for this mode as ``SearchService`` plans it under ``st``."""
        return lambda t, v: index.search(planned_query(
            mode, v, enc.encode_query(t) if mode == "hybrid" else None, flt, index=index, settings=st), flt)

    phases: list[tuple[str, Callable[[str, np.ndarray], object]]] = [
        ("clearance_dense", planned("dense", planner)),
        ("peer_dense", lambda t, v: peer.dense(v.tolist(), pscope)),
        ("clearance_hybrid", planned("hybrid", planner)),
        ("peer_hybrid_or", lambda t, v: peer.hybrid(t, v.tolist(), pscope, lexical="or")),
        ("peer_hybrid_and", lambda t, v: peer.hybrid(t, v.tolist(), pscope, lexical="and")),
    ]
    # the recall-first planners' phases come after those, back to back
    for n_exact, st in (recall_first or {}).items():
        phases += [(f"clearance_dense_exact_below_{n_exact}", planned("dense", st)),
                   (f"clearance_hybrid_exact_below_{n_exact}", planned("hybrid", st))]
    for name, fn in phases:  # the default's phases alternate: each Clearance phase is followed by the peer's
        times: list[float] = []
        for i, (text, vec) in enumerate(qs):
            if i < 10:  # warm-up
                fn(text, vec)
                continue
            timed(lambda: fn(text, vec), times)  # noqa: B023
        out[name] = stats(times)
    out["ratio_hybrid_p99_vs_peer_or"] = round(out["clearance_hybrid"]["p99_ms"] / out["peer_hybrid_or"]["p99_ms"], 3)
    out["ratio_hybrid_p50_vs_peer_or"] = round(out["clearance_hybrid"]["p50_ms"] / out["peer_hybrid_or"]["p50_ms"], 3)
    for n_exact in recall_first or {}:
        out[f"ratio_hybrid_p99_vs_peer_or_exact_below_{n_exact}"] = round(
            out[f"clearance_hybrid_exact_below_{n_exact}"]["p99_ms"] / out["peer_hybrid_or"]["p99_ms"], 3)
    return out


def recall(index: EdgeIndex, peer: PgVectorPeer, flt: CompiledFilter, pscope: PeerScope, qs: list[tuple[str, np.ndarray]],
           planner: RetrievalSettings, sweep: list[float], efs: list[int],
           recall_first: dict[int, RetrievalSettings] | None = None) -> dict[str, Any]:
    visible = probed_size(index, flt)
    small = plans_exact(planner, visible)
    got: dict[str, list[float]] = {"peer": [], "truth_agreement": []}
    # Each variant of Clearance's plan: the ACORN thresholds at the default ef, then the efs at
    # the default threshold (the default plan is the first sweep's column at the default value).
    variants: dict[str, dict[str, Any]] = {f"clearance_acorn_{a}": {"acorn_max_selectivity": a} for a in sweep}
    variants |= {f"clearance_ef_{ef}": {"hnsw_ef": ef} for ef in efs if ef != planner.hnsw_ef}
    variants |= {f"clearance_exact_below_{n_exact}": {"exact": plans_exact(st, visible)}
                 for n_exact, st in (recall_first or {}).items()}
    sweep_lat: dict[str, list[float]] = {k: [] for k in variants}
    got |= {k: [] for k in variants}
    for _text, vec in qs:
        truth = {chunk_number(h.id) for h in index.search(
            planned_query("dense", vec, None, flt, index=index, visible=visible, exact=True), flt)}
        if not truth:
            continue
        pg_exact = set(peer.dense(vec.tolist(), pscope, exact=True))
        got["truth_agreement"].append(len(pg_exact & truth) / len(truth))
        got["peer"].append(len(set(peer.dense(vec.tolist(), pscope)) & truth) / len(truth))
        for key, overrides in variants.items():
            t = time.perf_counter()
            hits = index.search(planned_query("dense", vec, None, flt, index=index, visible=visible, settings=planner,
                                                **overrides), flt)
            sweep_lat[key].append((time.perf_counter() - t) * 1000)
            got[key].append(len({chunk_number(h.id) for h in hits} & truth) / len(truth))
    out: dict[str, Any] = {"recall_at_10": {k: round(float(np.mean(v)), 4) for k, v in got.items() if v},
                           "exact_search_used": small,
                           "sweep_dense_p50_ms": {k: round(statistics.median(v), 3) for k, v in sweep_lat.items() if v}}
    return out


def markdown(report: dict[str, Any]) -> str:
    counts = report.get("queries", {})
    lines = [f"### Clearance beside PostgreSQL + pgvector, {report['chunks']:,} chunks ({report['when']})", "",
             f"Queries: {counts.get('timed', '?')} timed per phase (10 of them warm-up), "
             f"{counts.get('recall', '?')} for dense recall@10 against exact filtered search.", "",
             "| scope | share | Clearance hybrid p50/p99 ms | peer hybrid OR p50/p99 | peer hybrid AND p50/p99 | "
             "hybrid p99 ratio (vs OR) | Clearance dense p50/p99 | peer dense p50/p99 | dense recall@10 Clearance | peer |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    default = f"clearance_acorn_{RetrievalSettings().acorn_max_selectivity}"
    for label, r in report["scopes"].items():
        rec = r["recall_at_10"]
        lines.append(
            f"| {label} | {r['effective_share']:.3f} | {r['clearance_hybrid']['p50_ms']:.2f} / {r['clearance_hybrid']['p99_ms']:.2f} | "
            f"{r['peer_hybrid_or']['p50_ms']:.2f} / {r['peer_hybrid_or']['p99_ms']:.2f} | "
            f"{r['peer_hybrid_and']['p50_ms']:.2f} / {r['peer_hybrid_and']['p99_ms']:.2f} | {r['ratio_hybrid_p99_vs_peer_or']:.3f} | "
            f"{r['clearance_dense']['p50_ms']:.2f} / {r['clearance_dense']['p99_ms']:.2f} | "
            f"{r['peer_dense']['p50_ms']:.2f} / {r['peer_dense']['p99_ms']:.2f} | "
            f"{rec.get(default, float('nan')):.4f} | {rec['peer']:.4f} |")
    for prefix, what in (("clearance_acorn_", "ACORN threshold (`retrieval.acorn_max_selectivity`)"),
                         ("clearance_ef_", f"HNSW ef (`retrieval.hnsw_ef`; {RetrievalSettings().hnsw_ef} is the default "
                                           "column above), at the default ACORN threshold")):
        sweep = sorted({k for r in report["scopes"].values() for k in r["recall_at_10"] if k.startswith(prefix)},
                       key=lambda k: float(k.removeprefix(prefix)))
        if not sweep:
            continue
        lines += ["", f"Dense recall@10 (and dense p50 ms) per {what}; the peer's recall last:", "",
                  "| scope | share | " + " | ".join(s.removeprefix(prefix) for s in sweep) + " | peer |",
                  "|---|---|" + "---|" * (len(sweep) + 1)]
        for label, r in report["scopes"].items():
            cells = [f"{r['recall_at_10'].get(s, float('nan')):.4f} ({r['sweep_dense_p50_ms'].get(s, float('nan')):.1f})"
                     for s in sweep]
            lines.append(f"| {label} | {r['effective_share']:.3f} | " + " | ".join(cells) + f" | {r['recall_at_10']['peer']:.4f} |")
    recall_first = sorted({int(k.removeprefix("clearance_exact_below_")) for r in report["scopes"].values()
                           for k in r["recall_at_10"] if k.startswith("clearance_exact_below_")})
    for n_exact in recall_first:
        lines += ["", f"Recall-first planner (`retrieval.exact_below_points = {n_exact}`: exact dense search for every "
                      f"scope up to {n_exact:,} chunks), timed in the same run, after the default's and the peer's phases:", "",
                  "| scope | share | dense recall@10 default | recall-first | peer | recall-first dense p50/p99 | "
                  "recall-first hybrid p50/p99 | hybrid p99 ratio (vs peer OR) |",
                  "|---|---|---|---|---|---|---|---|"]
        for label, r in report["scopes"].items():
            rec, d, h = r["recall_at_10"], r[f"clearance_dense_exact_below_{n_exact}"], r[f"clearance_hybrid_exact_below_{n_exact}"]
            lines.append(f"| {label} | {r['effective_share']:.3f} | {rec.get(default, float('nan')):.4f} | "
                         f"{rec[f'clearance_exact_below_{n_exact}']:.4f} | {rec['peer']:.4f} | "
                         f"{d['p50_ms']:.2f} / {d['p99_ms']:.2f} | {h['p50_ms']:.2f} / {h['p99_ms']:.2f} | "
                         f"{r[f'ratio_hybrid_p99_vs_peer_or_exact_below_{n_exact}']:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
