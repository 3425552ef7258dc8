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

import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

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
ORG_NOW = datetime(2026, 11, 1, tzinfo=timezone.utc)
Run = dict[str, dict[str, float]]


@dataclass
class EvalConfig:
    work_dir: Path
    cache_path: Path
    modes: tuple[SearchMode, ...] = ("bm25", "dense", "hybrid")
    embedder: str = "minilm"
    personas: bool = True
    persona_mode: SearchMode = "hybrid"
    freshness_days: int = 365
    depth: int = 100  # documents ranked per query
    seed: int = 13
    retrieval: RetrievalSettings = field(default_factory=lambda: RetrievalSettings(max_top_k=1000))
    progress: Callable[[str], None] = lambda _msg: None


def _services(cfg: EvalConfig, tenant: str) -> Services:
    settings = Settings(
        storage=StorageSettings(data_dir=cfg.work_dir),
        embedder=EmbedderSettings(kind=cfg.embedder),  # type: ignore[arg-type]
        retrieval=cfg.retrieval,
        ingest=IngestSettings(tenant=tenant),
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
                              "embedder": services.embedder.name, "rrf_k": cfg.retrieval.rrf_k,
                              "prefetch_limit": cfg.retrieval.prefetch_limit}
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
                       "ms_per_query": round((time.perf_counter() - t0) * 1000 / max(len(ds.queries), 1), 2)}
        cfg.progress(f"{mode}: ndcg@10 {agg['ndcg@10']:.4f}")
    report["modes"] = modes
    report["significance"] = _significance(modes)
    if "hybrid" in runs and cosines:
        report["low_confidence"] = _calibrate(ds, runs["hybrid"], cosines)
    if cfg.personas:
        report["entitlements"] = _entitlements(services, ds, org, cfg, runs.get(cfg.persona_mode))
        report["freshness"] = _freshness(services, ds, org, cfg)
    return report


def _calibrate(ds: Dataset, hybrid: Run, cosines: dict[str, float]) -> dict[str, Any]:
    """Low-confidence threshold: the 10th percentile of the best top-10 cosine over queries whose
    hybrid top 10 holds a relevant document (so 90 % of answerable queries are not flagged);
    reported with the share of unanswerable queries it flags."""
    answerable, unanswerable = [], []
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
            rel = {d: g for d, g in ds.qrels[q].items() if org.visible(p, d)}
            if not rel:
                continue
            key = f"{p.name}:{q}"
            qrels_p[key] = rel
            pre[key], hits = _rank(services, scope, text, mode, cfg.depth)
            for prov in hits:
                checks += 1
                if not org.visible(p, str(prov["doc_id"])):
                    leaks += 1
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
    cfg.progress(f"entitlements: {checks} checks, {leaks} leaks")
    return out


def _freshness(services: Services, ds: Dataset, org: Organisation, cfg: EvalConfig) -> dict[str, Any]:
    cutoff = ORG_NOW - timedelta(days=cfg.freshness_days)
    fresh_qrels = {q: {d: g for d, g in rel.items() if org.modified[d] >= cutoff} for q, rel in ds.qrels.items()}
    fresh_qrels = {q: rel for q, rel in fresh_qrels.items() if rel}
    stale_returned = checks = 0
    run_fresh: Run = {}
    for q in fresh_qrels:
        max_age = int((datetime.now(timezone.utc) - cutoff).total_seconds())
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
