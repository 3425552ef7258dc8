"""The evaluation harness. It ingests a BEIR dataset through the production ``Ingestor`` into an
isolated collection and queries it through the production ``SearchService``: there is no
retrieval path of its own. Metrics come from ir-measures; significance from scipy.

What a run measures:
- quality per mode over the full corpus (an unrestricted eval scope, tenant still pinned);
- quality under entitlements for simulated personas, the leak count (must be 0: the run
  fails otherwise), and a post-filter baseline (retrieve unfiltered, then drop);
- freshness: with ``max_age`` no stale chunk may come back (checked), and the quality cost.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import ir_measures
from ir_measures import AP, RR, R, nDCG
from scipy import stats

from app.services import Services, build_services
from auth.principals import ClaimsResolver
from auth.validator import ValidatedToken
from core.settings import EmbedderSettings, IngestSettings, IssuerSettings, RetrievalSettings, Settings, StorageSettings
from core.types import Entitlements, Scope, SearchMode, SourceDocument
from eval.beir import Dataset
from eval.organisation import Organisation, Persona, simulate
from retrieval.embedder import build_embedder
from retrieval.embedding_cache import CachedEmbedder

MEASURES = [nDCG @ 10, R @ 100, RR @ 10, AP]
NAMES = {str(m): n for m, n in zip(MEASURES, ["ndcg@10", "recall@100", "mrr@10", "map"])}
ORG_NOW = datetime(2026, 11, 1, tzinfo=UTC)
Run = dict[str, dict[str, float]]


@dataclass
class EvalConfig:
    work_dir: Path
    cache_path: Path
    modes: tuple[SearchMode, ...] = ("bm25", "dense", "hybrid")
    embedder: str = "minilm"
    personas: bool = True
    known_items: int = 0  # documents sampled for the label-free known-item check (0: off)
    identifiers: int = 0  # identifier queries (eval.identifiers) per mode (0: off)
    persona_mode: SearchMode = "hybrid"
    freshness_days: int = 365
    depth: int = 100  # documents ranked per query
    seed: int = 13
    retrieval: RetrievalSettings = field(default_factory=lambda: RetrievalSettings(max_top_k=1000))
    # Chunking as the deployment configures it (the tenant is the simulated organisation's).
    ingest: IngestSettings = field(default_factory=IngestSettings)
    progress: Callable[[str], None] = lambda _msg: None


def dataset_identity(ds: Dataset) -> str:
    """SHA-256 over the corpus ids, the query texts and the judgments: two reports may be
    compared only when this matches (``eval.gate``)."""
    h = hashlib.sha256()
    for doc_id in sorted(ds.corpus):
        h.update(f"d\0{doc_id}\0".encode())
    for q in sorted(ds.queries):
        h.update(f"q\0{q}\0{ds.queries[q]}\0{json.dumps(ds.qrels.get(q, {}), sort_keys=True)}\0".encode())
    return h.hexdigest()


def _services(cfg: EvalConfig, tenant: str) -> Services:
    settings = Settings(
        storage=StorageSettings(data_dir=cfg.work_dir),
        embedder=EmbedderSettings(kind=cfg.embedder),  # type: ignore[arg-type]
        retrieval=cfg.retrieval,
        ingest=cfg.ingest.model_copy(update={"tenant": tenant}),
    )
    embedder = CachedEmbedder(build_embedder(settings.embedder), cfg.cache_path)
    return build_services(settings, embedder=embedder)


def _filename(doc_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", doc_id)[:100] + ".txt"


def ingest(services: Services, ds: Dataset, org: Organisation, progress: Callable[[str], None]) -> dict[str, Any]:
    t0 = time.perf_counter()
    docs = []
    for doc_id, (title, text) in ds.corpus.items():
        body = text if text.strip() else title
        docs.append(SourceDocument(ds.name, doc_id, f"beir://{ds.name}/{doc_id}", _filename(doc_id), body.encode(),
                                   org.acls[doc_id], org.modified[doc_id], title=title))
    counts: dict[str, int] = {}
    errors = []
    size = services.settings.ingest.batch_docs
    for start in range(0, len(docs), size):
        batch = docs[start:start + size]
        for doc, res in zip(batch, services.ingestor.apply_many(batch)):
            outcome = "failed" if isinstance(res, Exception) else res[0]
            counts[outcome] = counts.get(outcome, 0) + 1
            if isinstance(res, Exception):
                errors.append({"doc": doc.doc_id, "code": getattr(res, "code", "error")})
        progress(f"ingested {min(start + size, len(docs))}/{len(docs)}")
    services.index.optimize()
    return {"counts": counts, "errors": errors[:20], "seconds": round(time.perf_counter() - t0, 1)}


def _rank(services: Services, scope: Scope, query: str, mode: SearchMode, depth: int,
          best_cosine: dict[str, float] | None = None) -> tuple[dict[str, float], list[dict]]:
    """Documents ranked by their best chunk; also the raw chunk payload provenance for checks."""
    res = services.search_unaudited.search(scope, query, top_k=min(depth * 3, services.settings.retrieval.max_top_k), mode=mode)
    if best_cosine is not None:
        best_cosine[query] = max((h.dense_score for h in res.hits[:10] if h.dense_score is not None), default=0.0)
    ranked: dict[str, float] = {}
    for h in res.hits:
        doc = h.doc_id
        if doc not in ranked and len(ranked) < depth:
            ranked[doc] = h.score
    # ir-measures sorts by score; make ties impossible so the engine's order is kept.
    n = len(ranked)
    return {d: float(n - i) for i, d in enumerate(ranked)}, [h.provenance for h in res.hits]


def _metrics(qrels: dict[str, dict[str, int]], run: Run) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    per_query: dict[str, dict[str, float]] = {q: {n: 0.0 for n in NAMES.values()} for q in qrels}
    for m in ir_measures.iter_calc(MEASURES, qrels, run):
        per_query.setdefault(m.query_id, {})[NAMES[str(m.measure)]] = float(m.value)
    agg = {n: (sum(v[n] for v in per_query.values()) / len(per_query) if per_query else 0.0) for n in NAMES.values()}
    return agg, per_query


def _persona_scope(org: Organisation, p: Persona) -> Scope:
    issuer = IssuerSettings(issuer="eval", tenant=org.tenant)
    ent = ClaimsResolver().resolve(ValidatedToken(issuer, {}, {"sub": p.name, "groups": list(p.groups)}))
    return Scope(ent)


def _unrestricted(tenant: str, **kw: Any) -> Scope:
    return Scope(Entitlements("eval", "eval", tenant, frozenset()),
                 unrestricted_reason="evaluation scores the whole corpus of its isolated collection", **kw)


def run(ds: Dataset, cfg: EvalConfig) -> dict[str, Any]:
    org = simulate(list(ds.corpus), seed=cfg.seed, now=ORG_NOW)
    services = _services(cfg, org.tenant)
    try:
        return _run(ds, cfg, org, services)
    finally:
        services.close()


def _run(ds: Dataset, cfg: EvalConfig, org: Organisation, services: Services) -> dict[str, Any]:
    report: dict[str, Any] = {"dataset": ds.name, "docs": len(ds.corpus), "queries": len(ds.queries),
                              "identity": dataset_identity(ds),
                              "embedder": services.embedder.name, "rrf_k": cfg.retrieval.rrf_k,
                              "fusion": cfg.retrieval.fusion, "weights": list(cfg.retrieval.leg_weights()),
                              "prefetch_limit": cfg.retrieval.prefetch_limit}
    from eval.live import commit_info, ranking_settings

    report["meta"] = {**commit_info(), "ranking": ranking_settings(services), "production_top_k": PRODUCTION_TOP_K}
    report["ingest"] = ingest(services, ds, org, cfg.progress)
    report["chunks"] = services.index.size()
    runs: dict[str, Run] = {}
    modes: dict[str, Any] = {}
    everything = _unrestricted(org.tenant)
    cosines: dict[str, float] = {}
    for mode in cfg.modes:
        t0 = time.perf_counter()
        track = cosines if mode == "hybrid" else None
        runs[mode] = {q: _rank(services, everything, text, mode, cfg.depth, track)[0] for q, text in ds.queries.items()}
        agg, per_query = _metrics(ds.qrels, runs[mode])
        modes[mode] = {"metrics": agg, "per_query": per_query,
                       "ms_per_query": round((time.perf_counter() - t0) * 1000 / max(len(ds.queries), 1), 2),
                       "ms_per_query_production": _production_latency(services, everything, ds, mode)}
        cfg.progress(f"{mode}: ndcg@10 {agg['ndcg@10']:.4f}")
    report["modes"] = modes
    report["significance"] = _significance(modes)
    if "hybrid" in runs and cosines:
        report["low_confidence"] = _calibrate(ds, runs["hybrid"], cosines)
    if cfg.known_items:
        ki = report["known_item"] = _known_item(services, ds, cfg, everything)
        ki["order_by_ndcg@10"] = sorted(cfg.modes, key=lambda m: -modes[m]["metrics"]["ndcg@10"])
        ki["orders_agree"] = ki["order_by_ndcg@10"] == ki["order_by_mrr@10"]
    if cfg.identifiers:
        report["identifiers"] = _identifiers(services, ds, cfg, everything)
    if cfg.personas:
        report["entitlements"] = _entitlements(services, ds, org, cfg, runs.get(cfg.persona_mode))
        report["freshness"] = _freshness(services, ds, org, cfg)
    return report


PRODUCTION_TOP_K = 10  # the API's default top_k: what a caller's latency is measured at
LATENCY_QUERIES = 100


def _production_latency(services: Services, scope: Scope, ds: Dataset, mode: SearchMode) -> float:
    """Mean ms per query at the production top_k (``ms_per_query`` is at the ranking depth, 300
    chunks, and says nothing about what a caller waits), over the first 100 queries."""
    texts = [ds.queries[q] for q in sorted(ds.queries)[:LATENCY_QUERIES]]
    t0 = time.perf_counter()
    for text in texts:
        services.search_unaudited.search(scope, text, top_k=PRODUCTION_TOP_K, mode=mode)
    return round((time.perf_counter() - t0) * 1000 / max(len(texts), 1), 2)


def _known_item(services: Services, ds: Dataset, cfg: EvalConfig, scope: Scope) -> dict[str, Any]:
    """The label-free known-item measure of ``eval.live`` on a labelled set, per mode: queries
    generated (same method and seed) from ``cfg.known_items`` sampled documents, MRR@10 of the
    source document. Next to nDCG@10 it shows whether the label-free signal orders the modes as
    the labelled one does."""
    from eval.live import generate_known_items

    sample = sorted(random.Random(cfg.seed).sample(sorted(ds.corpus), min(cfg.known_items, len(ds.corpus))))
    generated = generate_known_items({d: (ds.name, *ds.corpus[d]) for d in ds.corpus}, seed=cfg.seed)
    queries = [q for d in sample for q in generated.get(d, [])]
    out: dict[str, Any] = {"documents": len(sample), "queries": len(queries), "modes": {}}
    for mode in cfg.modes:
        rr = []
        for q in queries:
            ranked = list(_rank(services, scope, q.text, mode, 10)[0])
            rr.append(1.0 / (ranked.index(q.known) + 1) if q.known in ranked else 0.0)
        out["modes"][mode] = {"mrr@10": round(sum(rr) / len(rr), 4) if rr else None}
    out["order_by_mrr@10"] = sorted(cfg.modes, key=lambda m: -(out["modes"][m]["mrr@10"] or 0.0))
    cfg.progress(f"known-item: {len(queries)} queries from {len(sample)} documents")
    return out


def _identifiers(services: Services, ds: Dataset, cfg: EvalConfig, scope: Scope) -> dict[str, Any]:
    """Success@1/@10 per mode on the identifier query set (``eval.identifiers``)."""
    from eval.identifiers import generate, success

    queries = generate(dict(ds.corpus), n=cfg.identifiers, seed=cfg.seed)
    out: dict[str, Any] = {"queries": len(queries), "modes": {}}
    for mode in cfg.modes:
        out["modes"][mode] = success(queries, lambda t: list(_rank(services, scope, t, mode, 10)[0]))
    if {"hybrid", "bm25"} <= set(cfg.modes) and queries:
        h, b = out["modes"]["hybrid"]["all"], out["modes"]["bm25"]["all"]
        out["hybrid_ge_bm25@10"] = h["success@10"] >= b["success@10"]
    cfg.progress(f"identifiers: {len(queries)} queries; " + ", ".join(
        f"{m} success@1 {r['all']['success@1']:.3f} @10 {r['all']['success@10']:.3f}" for m, r in out["modes"].items() if "all" in r))
    return out


def _calibrate(ds: Dataset, hybrid: Run, cosines: dict[str, float]) -> dict[str, Any]:
    """Low-confidence threshold: the 10th percentile of the best top-10 cosine over queries whose
    hybrid top 10 holds a relevant document (so 90 % of answerable queries are not flagged);
    reported with the share of unanswerable queries it flags."""
    answerable: list[float] = []
    unanswerable: list[float] = []
    for q, text in ds.queries.items():
        top10 = list(hybrid.get(q, {}))[:10]
        (answerable if any(d in ds.qrels[q] for d in top10) else unanswerable).append(cosines.get(text, 0.0))
    if not answerable:
        return {"threshold": None}
    answerable.sort()
    t = answerable[max(0, int(0.1 * len(answerable)) - 1)]
    return {"threshold": round(t, 4), "answerable": len(answerable), "unanswerable": len(unanswerable),
            "unanswerable_flagged": (sum(c < t for c in unanswerable) / len(unanswerable)) if unanswerable else None,
            "answerable_flagged": sum(c < t for c in answerable) / len(answerable)}


def _significance(modes: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    names = list(modes)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            qa, qb = modes[a]["per_query"], modes[b]["per_query"]
            common = sorted(qa.keys() & qb.keys())
            xa = [qa[q]["ndcg@10"] for q in common]
            xb = [qb[q]["ndcg@10"] for q in common]
            if len(common) < 2 or xa == xb:
                p_t = p_w = 1.0
            else:
                p_t = float(stats.ttest_rel(xa, xb).pvalue)
                diffs = [x - y for x, y in zip(xa, xb) if x != y]
                p_w = float(stats.wilcoxon(diffs).pvalue) if len(diffs) >= 2 else 1.0
            out.append({"a": a, "b": b, "metric": "ndcg@10", "mean_diff": (sum(xa) - sum(xb)) / max(len(common), 1),
                        "p_ttest": p_t, "p_wilcoxon": p_w, "queries": len(common)})
    return out


def _entitlements(services: Services, ds: Dataset, org: Organisation, cfg: EvalConfig,
                  unfiltered: Run | None) -> dict[str, Any]:
    """Quality under each persona's entitlements, leaks, and the post-filter baseline."""
    mode = cfg.persona_mode
    qrels_p: dict[str, dict[str, int]] = {}
    pre: Run = {}
    post10: Run = {}
    post100: Run = {}
    checks = leaks = 0
    per_persona: dict[str, dict[str, float]] = {}
    for p in org.personas:
        scope = _persona_scope(org, p)
        n_before = len(qrels_p)
        for q, text in ds.queries.items():
            # Every query is asked and every returned chunk checked, whether or not the persona
            # may see a judged document: leak checks never depend on the labels.
            ranked_p, hits = _rank(services, scope, text, mode, cfg.depth)
            for prov in hits:
                checks += 1
                if not org.visible(p, str(prov["doc_id"])):
                    leaks += 1
            rel = {d: g for d, g in ds.qrels[q].items() if org.visible(p, d)}
            if not rel:
                continue
            key = f"{p.name}:{q}"
            qrels_p[key] = rel
            pre[key] = ranked_p
            if unfiltered is not None:
                ranked = list(unfiltered[q])
                post10[key] = {d: s for d, s in unfiltered[q].items() if d in ranked[:10] and org.visible(p, d)}
                post100[key] = {d: s for d, s in unfiltered[q].items() if org.visible(p, d)}
        keys = list(qrels_p)[n_before:]
        if keys:
            sub = {k: qrels_p[k] for k in keys}
            per_persona[p.name] = {"queries": len(keys), "ndcg@10": _metrics(sub, {k: pre[k] for k in keys})[0]["ndcg@10"],
                                   "visible_docs": sum(org.visible(p, d) for d in ds.corpus) / len(ds.corpus)}
    out: dict[str, Any] = {"mode": mode, "persona_queries": len(qrels_p), "checks": checks, "leaks": leaks,
                           "leak_rate": leaks / checks if checks else 0.0, "personas": per_persona,
                           "prefilter": _metrics(qrels_p, pre)[0]}
    if unfiltered is not None:
        out["postfilter_retrieve10"] = _metrics(qrels_p, post10)[0]
        out["postfilter_retrieve100"] = _metrics(qrels_p, post100)[0]
        out["postfilter_empty_results_retrieve10"] = sum(1 for v in post10.values() if not v)
    if checks == 0:
        out["leak_checks_skipped"] = "no persona query returned a chunk: leak checks ran on 0 chunks"
    cfg.progress(f"entitlements: {checks} checks, {leaks} leaks")
    return out


def _freshness(services: Services, ds: Dataset, org: Organisation, cfg: EvalConfig) -> dict[str, Any]:
    cutoff = ORG_NOW - timedelta(days=cfg.freshness_days)
    fresh_qrels = {q: {d: g for d, g in rel.items() if org.modified[d] >= cutoff} for q, rel in ds.qrels.items()}
    fresh_qrels = {q: rel for q, rel in fresh_qrels.items() if rel}
    stale_returned = checks = 0
    run_fresh: Run = {}
    for q in fresh_qrels:
        max_age = int((datetime.now(UTC) - cutoff).total_seconds())
        scope = _unrestricted(org.tenant, max_age_s=max_age)
        run_fresh[q], hits = _rank(services, scope, ds.queries[q], cfg.persona_mode, cfg.depth)
        for prov in hits:
            checks += 1
            # The engine's cutoff moves with the clock; a minute of slack keeps the check exact.
            if org.modified[str(prov["doc_id"])] < cutoff - timedelta(seconds=60):
                stale_returned += 1
    relevant_all = sum(len(r) for r in ds.qrels.values())
    relevant_fresh = sum(len(r) for r in fresh_qrels.values())
    cfg.progress(f"freshness: {checks} checks, {stale_returned} stale")
    return {"max_age_days": cfg.freshness_days, "queries": len(fresh_qrels), "checks": checks,
            "stale_returned": stale_returned, "relevant_kept_share": relevant_fresh / max(relevant_all, 1),
            "metrics": _metrics(fresh_qrels, run_fresh)[0]}
