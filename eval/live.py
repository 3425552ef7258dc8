"""Label-free evaluation of a live deployment: its own index and catalog, its own people.

The deployment's ``Services`` (built from its settings by ``app.services.build_services``) are
queried through the same ``SearchService`` the audited reads wrap (``search_unaudited``, so an
evaluation leaves no trace in the audit trail), at the production ``top_k``, grouped by
document, in the deployment's ranking settings. Identities come from a personas file: principal
sets, each held as the deployment's resolver would hold it (``tenant:<tenant>`` added).

Measures (each defined in ``DEFINITIONS``, copied into every report):

- leak checks on **every** returned chunk against the catalog's ACL for the asking principals
  (a chunk whose document has no catalog row counts as a leak too); the number of chunks
  checked is stated, and a run that checked none says so and fails the gate;
- zero-result, low-confidence and stale-source rates, per persona and per source;
- known-item evaluation: queries generated from documents the persona may see, with that
  document as the known answer, giving MRR@10 and success@1/@10 per persona.

Known-item generation (seeded: ``random.Random(f"{seed}:{document key}")``; the same document
gives the same queries for every persona and every run):

- ``title``: the catalog title, when it has at least two words;
- ``sentence``: among the document's sentences of 6-30 words, the three with the highest mean
  inverse document frequency over the deployment's corpus; one of them, drawn with the seed;
- ``identifier``: up to three identifier-like tokens (letters and digits mixed, such as
  ``INC-2041``, ``Q3``, ``FY2027``), rarest in the corpus first, joined in text order.

The catalog is read once at the start: documents written while the evaluation runs may show up
as leaks (an ACL changed since) and should not be evaluated against a moving deployment.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.services import Services
from core.errors import InvalidRequestError, NotFoundError
from core.types import Entitlements, Scope, SearchMode
from retrieval.payload import doc_key

KNOWN_ITEM_KINDS = ("title", "sentence", "identifier")
PRODUCTION_TOP_K = 10  # the API's default top_k (api/routes/search.py)
ISSUER = "eval:personas"

DEFINITIONS = {
    "leak": "a returned chunk whose document the catalog's ACL does not grant to the asking principals "
            "(allow holds none of them, or deny holds one), or whose document has no catalog row; "
            "every returned chunk of every query is checked",
    "zero_result_rate": "share of queries with no result at all",
    "low_confidence_rate": "share of queries the service flagged low_confidence (best top-10 cosine below "
                           "retrieval.low_confidence_dense); bm25 mode has no dense signal and is not counted",
    "stale_source_rate": "share of queries whose answer holds a chunk of a source beyond its freshness SLA "
                         "(ingest.source_sla_s)",
    "mrr@10": "mean over known-item queries of 1/rank of the known document in the top 10 documents (0 if absent)",
    "success@1": "share of known-item queries whose known document is ranked first",
    "success@10": "share of known-item queries whose known document is in the top 10",
    "rbo@10": "rank-biased overlap (p=0.9, extrapolated) of a query's top-10 documents against the baseline's",
    "jaccard@10": "|A∩B|/|A∪B| of a query's top-10 documents and the baseline's",
    "ndcg@10": "judged external queries: nDCG@10 with linear gain over the documents the persona may see",
    "judged@10": "share of a judged query's top-10 documents that carry a judgment (grade 0 included); "
                 "unjudged documents count as not relevant in nDCG@10, so read the two together",
    "per_source": "known-item queries by the source of their known document; other queries by the source of "
                  "their first result ('(none)' without one)",
}

_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'_-]*")
_IDENT = re.compile(r"\b(?=[A-Za-z0-9/_-]*\d)(?=[A-Za-z0-9/_-]*[A-Za-z])[A-Za-z0-9]+(?:[-_/][A-Za-z0-9]+)*\b")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


@dataclass(frozen=True)
class Persona:
    """One principal set to evaluate as (the deployment's tenant principal is added)."""

    name: str
    subject: str
    principals: frozenset[str]

    def entitlements(self, tenant: str) -> Entitlements:
        # Not a token's resolution: the operator states who the deployment's people are, and
        # each persona holds exactly the principal set written down for it (validated here).
        return Entitlements(subject=self.subject, issuer=ISSUER, tenant=tenant,
                            principals=self.principals | {f"tenant:{tenant}"})


@dataclass(frozen=True)
class Query:
    id: str
    text: str
    kind: str  # title | sentence | identifier | external
    known: str | None = None  # document key of the known answer
    source: str | None = None  # the known document's source
    persona: str | None = None  # external queries: only this persona asks it (None: every persona)


@dataclass
class LiveConfig:
    personas: list[Persona]
    mode: SearchMode = "hybrid"
    top_k: int = PRODUCTION_TOP_K
    seed: int = 13
    kinds: tuple[str, ...] = KNOWN_ITEM_KINDS
    max_docs_per_persona: int | None = None  # known-item documents per persona (seeded sample)
    external: list[Query] = field(default_factory=list)  # e.g. `clearance eval sample` output
    # Graded judgments of external queries ({query id: {document key: grade}}, `eval judge import`):
    # nDCG@10 and judged@10 per persona for the queries that have them.
    qrels: dict[str, dict[str, int]] | None = None
    worst: int = 10
    progress: Callable[[str], None] = lambda _msg: None


def load_personas(path: Path) -> list[Persona]:
    """``personas: [{name, subject?, principals: [...]}]`` (or a bare list), YAML or JSON."""
    try:
        raw_text = path.read_text()
    except OSError as exc:
        raise InvalidRequestError(f"cannot read personas file {path}: {exc}", code="personas_invalid") from exc
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as exc:  # pragma: no cover - pyyaml ships with the test extra
            raise InvalidRequestError("YAML personas need pyyaml; write the file as JSON instead",
                                      code="personas_invalid") from exc
        try:
            data = yaml.safe_load(raw_text)
        except yaml.YAMLError as exc:
            raise InvalidRequestError(f"{path}: not valid YAML: {exc}", code="personas_invalid") from exc
    else:
        try:
            data = json.loads(raw_text)
        except ValueError as exc:
            raise InvalidRequestError(f"{path}: not valid JSON: {exc}", code="personas_invalid") from exc
    items = data.get("personas") if isinstance(data, dict) else data
    if not isinstance(items, list) or not items:
        raise InvalidRequestError(f"{path}: expected a non-empty list under 'personas'", code="personas_invalid")
    out: list[Persona] = []
    names: set[str] = set()
    for n, item in enumerate(items, start=1):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            raise InvalidRequestError(f"{path}: persona {n} needs a name", code="personas_invalid")
        principals = item.get("principals")
        if not isinstance(principals, list) or not all(isinstance(p, str) for p in principals):
            raise InvalidRequestError(f"{path}: persona {item['name']!r} needs a list of principals",
                                      code="personas_invalid")
        if item["name"] in names:
            raise InvalidRequestError(f"{path}: persona {item['name']!r} appears twice", code="personas_invalid")
        names.add(item["name"])
        subject = str(item.get("subject") or item["name"])
        persona = Persona(item["name"], subject, frozenset(principals))
        try:
            persona.entitlements("check")
        except ValueError as exc:
            raise InvalidRequestError(f"{path}: persona {item['name']!r}: {exc}", code="personas_invalid") from exc
        out.append(persona)
    return out


def load_queries(path: Path) -> list[Query]:
    """A query-set JSONL (``clearance eval sample`` writes one): ``{"id", "query", "persona"?}``."""
    out: list[Query] = []
    seen: set[str] = set()
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            qid, text = str(rec.get("id", n)), str(rec["query"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidRequestError(f"{path}:{n}: expected {{id, query, persona?}}", code="queries_invalid") from exc
        if qid in seen:
            raise InvalidRequestError(f"{path}:{n}: query id {qid!r} appears twice", code="queries_invalid")
        seen.add(qid)
        persona = rec.get("persona")
        out.append(Query(f"q:{qid}", text, "external", persona=str(persona) if persona else None))
    return out


def check_query_personas(queries: list[Query], personas: list[Persona]) -> None:
    """A query naming a persona the personas file does not hold would be asked by nobody."""
    names = {p.name for p in personas}
    unknown = sorted({q.persona for q in queries if q.persona is not None and q.persona not in names})
    if unknown:
        raise InvalidRequestError(f"the query set names personas the personas file does not hold: {', '.join(unknown)}",
                                  code="queries_invalid")


# -- known-item generation ---------------------------------------------------------------------


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def ranked_sentences(text: str, idf: Callable[[str], float]) -> list[tuple[float, str]]:
    """The sentences of 6-30 words in ``text`` with their mean word IDF, most distinctive first
    (ties by text), whitespace collapsed."""
    out = []
    for s in _SENTENCE.split(text):
        words = _words(s)
        if 6 <= len(words) <= 30:
            out.append((sum(idf(w) for w in words) / len(words), " ".join(s.split())))
    return sorted(out, key=lambda x: (-x[0], x[1]))


def generate_known_items(docs: dict[str, tuple[str, str, str]], *, seed: int,
                         kinds: Iterable[str] = KNOWN_ITEM_KINDS) -> dict[str, list[Query]]:
    """Known-item queries per document key; ``docs`` maps key -> (source, title, text)."""
    kinds = tuple(kinds)
    df: Counter[str] = Counter()
    idents_df: Counter[str] = Counter()
    for _source, _title, text in docs.values():
        df.update(set(_words(text)))
        idents_df.update({t.lower() for t in _IDENT.findall(text)})
    n_docs = max(len(docs), 1)

    def idf(w: str) -> float:
        return math.log((n_docs + 1) / (df.get(w, 0) + 0.5))

    out: dict[str, list[Query]] = {}
    for key in sorted(docs):
        source, title, text = docs[key]
        rng = random.Random(f"{seed}:{key}")
        qs: list[Query] = []
        if "title" in kinds and len(_words(title)) >= 2:
            qs.append(Query(f"{key}#title", title.strip(), "title", key, source))
        if "sentence" in kinds:
            sentences = ranked_sentences(text, idf)
            if sentences:
                qs.append(Query(f"{key}#sentence", rng.choice(sentences[:3])[1], "sentence", key, source))
        if "identifier" in kinds:
            found: dict[str, int] = {}
            for pos, tok in enumerate(_IDENT.findall(text)):
                found.setdefault(tok, pos)
            rare = sorted(found, key=lambda t: (idents_df[t.lower()], found[t]))[:3]
            if rare:
                qs.append(Query(f"{key}#identifier", " ".join(sorted(rare, key=lambda t: found[t])), "identifier", key, source))
        out[key] = qs
    return out


# -- the run -----------------------------------------------------------------------------------


def _unrestricted(tenant: str) -> Scope:
    return Scope(Entitlements("eval", "eval", tenant, frozenset()),
                 unrestricted_reason="known-item generation reads the text of every document of the tenant "
                                     "(queries are then asked only by personas the catalog grants the document)")


def commit_info() -> dict[str, Any]:
    repo = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}
    if head.returncode != 0:
        return {"commit": "unknown", "dirty": None}
    return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def ranking_settings(services: Services) -> dict[str, Any]:
    """Every setting that shapes a ranking (what a changed baseline is explained by)."""
    r = services.settings.retrieval
    keys = ("fusion", "rrf_k", "acorn", "exact_below_points", "idf_scope", "idf_sample_points", "hnsw_ef", "prefetch_limit",
            "dense_weight", "bm25_weight", "bm25_k1", "bm25_b", "bm25_avg_len", "bm25_stem", "bm25_stop_words", "source_max_age_s",
            "low_confidence_dense", "rerank_model", "rerank_depth")
    out = {k: getattr(r, k) for k in keys if hasattr(r, k)}
    out["dense_weight"], out["bm25_weight"] = r.leg_weights()  # as applied, defaults resolved
    out["embedder"] = services.embedder.name
    ing = services.settings.ingest
    out["chunk_chars"], out["chunk_overlap_chars"] = ing.chunk_chars, ing.chunk_overlap_chars
    return out


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _rate(xs: list[bool]) -> float | None:
    return round(sum(xs) / len(xs), 6) if xs else None


def _bootstrap(xs: list[float], seed: int, rounds: int = 1000) -> list[float] | None:
    """95 % percentile bootstrap interval of the mean."""
    if len(xs) < 2:
        return None
    rng = random.Random(seed)
    n = len(xs)
    means = sorted(sum(rng.choice(xs) for _ in range(n)) / n for _ in range(rounds))
    return [round(means[int(0.025 * rounds)], 6), round(means[int(0.975 * rounds) - 1], 6)]


def check_documents(qrels: dict[str, dict[str, int]], known: set[str], where: str) -> None:
    """Judgments naming a document the catalog does not hold are an error listing them."""
    unknown = sorted({d for rel in qrels.values() for d in rel if d not in known})
    if unknown:
        shown = ", ".join(unknown[:20]) + (f" (and {len(unknown) - 20} more)" if len(unknown) > 20 else "")
        raise InvalidRequestError(f"{where}: {len(unknown)} judged document(s) not in the catalog: {shown}",
                                  code="unknown_documents")


def _ndcg10(top: list[str], grades: dict[str, int]) -> float | None:
    """nDCG@10 with linear gain (trec_eval's); None without a relevant document."""
    ideal = sorted((g for g in grades.values() if g > 0), reverse=True)[:10]
    if not ideal:
        return None
    dcg = sum(grades.get(d, 0) / math.log2(i + 2) for i, d in enumerate(top[:10]))
    return dcg / sum(g / math.log2(i + 2) for i, g in enumerate(ideal))


def _summary(rows: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    known = [r for r in rows if r["known"] is not None]
    rr = [1.0 / r["rank"] if r["rank"] else 0.0 for r in known]
    out: dict[str, Any] = {
        "queries": len(rows),
        "zero_result_rate": _rate([r["zero"] for r in rows]),
        "low_confidence_rate": _rate([bool(r["low_confidence"]) for r in rows if r["low_confidence"] is not None]),
        "stale_source_rate": _rate([bool(r["stale"]) for r in rows]),
        "checked_chunks": sum(r["hits"] for r in rows),
        "leaks": sum(r["leaks"] for r in rows),
        "known_item": {
            "queries": len(known),
            "mrr@10": round(sum(rr) / len(rr), 6) if rr else None,
            "mrr@10_ci95": _bootstrap(rr, seed),
            "success@1": _rate([r["rank"] == 1 for r in known]),
            "success@10": _rate([bool(r["rank"]) for r in known]),
        },
    }
    scored = [r["ndcg@10"] for r in rows if r.get("ndcg@10") is not None]
    judged = [r["judged@10"] for r in rows if r.get("judged@10") is not None]
    if scored or judged:
        out["labelled"] = {"queries": len(scored), "ndcg@10": round(sum(scored) / len(scored), 6) if scored else None,
                           "ndcg@10_ci95": _bootstrap(scored, seed),
                           "judged@10": round(sum(judged) / len(judged), 6) if judged else None}
    return out


def run_live(services: Services, cfg: LiveConfig) -> dict[str, Any]:
    """Evaluate the deployment behind ``services`` for ``cfg.personas``; returns the report."""
    if not cfg.personas:
        raise InvalidRequestError("no personas to evaluate", code="personas_invalid")
    check_query_personas(cfg.external, cfg.personas)
    if not 1 <= cfg.top_k <= services.settings.retrieval.max_top_k:
        raise InvalidRequestError(f"top_k must be between 1 and {services.settings.retrieval.max_top_k}")
    started = datetime.now(UTC)
    t_start = time.perf_counter()
    tenant = services.settings.ingest.tenant
    rows = {r.key: r for r in services.catalog.documents(tenant=tenant) if r.state == "indexed"}
    if not rows:
        raise InvalidRequestError(f"the catalog holds no indexed document for tenant {tenant!r}: ingest first",
                                  code="nothing_to_evaluate")
    cfg.progress(f"{len(rows)} documents in the catalog")
    if cfg.qrels is not None:
        check_documents(cfg.qrels, set(rows), "judgments")

    # Document texts, read from the index (what the engine actually holds).
    everything = _unrestricted(tenant)
    texts: dict[str, tuple[str, str, str]] = {}
    for key, row in rows.items():
        try:
            body = services.search_unaudited.read_document(everything, row.source, row.doc_id).body
        except NotFoundError:  # a catalog row without chunks (empty document): nothing to generate from
            body = {"chunks": []}
        texts[key] = (row.source, row.title or "", "\n".join(str(c["text"]) for c in body["chunks"]))
    generated = generate_known_items(texts, seed=cfg.seed, kinds=cfg.kinds)

    # The query set per persona.
    plan: dict[str, list[Query]] = {}
    for p in cfg.personas:
        principals = p.entitlements(tenant).principals
        visible = sorted(k for k, r in rows.items() if r.acl.visible_to(principals))
        if cfg.max_docs_per_persona is not None and len(visible) > cfg.max_docs_per_persona:
            visible = sorted(random.Random(f"{cfg.seed}:{p.name}").sample(visible, cfg.max_docs_per_persona))
        qs = [q for k in visible for q in generated.get(k, [])]
        qs += [q for q in cfg.external if q.persona in (None, p.name)]
        plan[p.name] = qs

    corpus_id = _sha([[k, r.content_hash, sorted(r.acl.allow), sorted(r.acl.deny)] for k, r in sorted(rows.items())])
    queries_id = _sha({p.name: {"principals": sorted(p.entitlements(tenant).principals),
                                "queries": [[q.id, q.text, q.known] for q in plan[p.name]]} for p in cfg.personas})
    identity = _sha({"tenant": tenant, "corpus": corpus_id, "queries": queries_id, "mode": cfg.mode, "top_k": cfg.top_k})

    results: list[dict[str, Any]] = []
    latencies: list[float] = []
    leak_examples: list[dict[str, Any]] = []
    for p in cfg.personas:
        ent = p.entitlements(tenant)
        scope = Scope(ent)
        for q in plan[p.name]:
            t0 = time.perf_counter()
            res = services.search_unaudited.search(scope, q.text, top_k=cfg.top_k, mode=cfg.mode,
                                                   group_by="document", chunks_per_document=3)
            latencies.append((time.perf_counter() - t0) * 1000)
            leaks = 0
            for h in res.hits:
                held = rows.get(doc_key(tenant, h.source, h.doc_id))
                if held is None or not held.acl.visible_to(ent.principals):
                    leaks += 1
                    if len(leak_examples) < 20:
                        leak_examples.append({"persona": p.name, "query": q.id, "chunk": h.id,
                                              "document": doc_key(tenant, h.source, h.doc_id),
                                              "why": "no catalog row" if held is None else "ACL does not grant it"})
            top = [g.key for g in (res.documents or [])][:cfg.top_k]
            rank = top.index(q.known) + 1 if q.known in top[:10] else None
            stale = bool(services.freshness.stale({h.source for h in res.hits})) if res.hits else False
            source = q.source or (res.hits[0].source if res.hits else "(none)")
            labelled: dict[str, float | None] = {}
            grades = (cfg.qrels or {}).get(q.id.removeprefix("q:")) if q.kind == "external" else None
            if grades is not None:
                # Only what this persona may see can be asked of its answers.
                grades = {d: g for d, g in grades.items() if rows[d].acl.visible_to(ent.principals)}
                labelled = {"ndcg@10": _ndcg10(top, grades),
                            "judged@10": sum(d in grades for d in top[:10]) / len(top[:10]) if top else None}
            results.append({**labelled,
                "key": f"{p.name}|{q.id}", "persona": p.name, "id": q.id, "kind": q.kind, "query": q.text,
                "source": source, "known": q.known, "rank": rank, "top10": top[:10], "hits": len(res.hits),
                "leaks": leaks, "zero": not res.hits, "low_confidence": res.low_confidence, "stale": stale,
                "degraded": res.degraded,
            })
        cfg.progress(f"{p.name}: {len(plan[p.name])} queries")

    by_persona = {p.name: _summary([r for r in results if r["persona"] == p.name], cfg.seed) for p in cfg.personas}
    for p in cfg.personas:
        by_persona[p.name]["principals"] = sorted(p.entitlements(tenant).principals)
        by_persona[p.name]["visible_documents"] = sum(1 for r in rows.values()
                                                      if r.acl.visible_to(p.entitlements(tenant).principals))
    sources = sorted({r["source"] for r in results})
    by_source = {s: _summary([r for r in results if r["source"] == s], cfg.seed) for s in sources}
    by_kind = {k: _summary([r for r in results if r["kind"] == k], cfg.seed)
               for k in (*KNOWN_ITEM_KINDS, "external") if any(r["kind"] == k for r in results)}
    overall = _summary(results, cfg.seed)
    lat = sorted(latencies)
    report: dict[str, Any] = {
        "kind": "live",
        "dataset": f"live:{tenant}",
        "definitions": DEFINITIONS,
        "meta": {
            **commit_info(),
            "started_at": started.isoformat(),
            "tenant": tenant,
            "mode": cfg.mode,
            "seed": cfg.seed,
            "known_item_kinds": list(cfg.kinds),
            "ranking": ranking_settings(services),
            "identity": {"hash": identity, "corpus": corpus_id, "queries": queries_id},
            "counts": {"documents": len(rows), "chunks": services.index.size(), "personas": len(cfg.personas),
                       "queries": len(results), "external_queries": len(cfg.external)},
            "timings": {"top_k": cfg.top_k, "group_by": "document", "searches": len(lat),
                        "ms_mean": round(sum(lat) / len(lat), 3) if lat else None,
                        "ms_p50": round(lat[len(lat) // 2], 3) if lat else None,
                        "ms_p95": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))], 3) if lat else None,
                        "total_s": round(time.perf_counter() - t_start, 3)},
        },
        "leak_checks": {"checked_chunks": overall["checked_chunks"], "leaks": overall["leaks"], "examples": leak_examples},
        "overall": overall,
        "personas": by_persona,
        "sources": by_source,
        "kinds": by_kind,
        "queries": results,
        "worst": sorted((r for r in results if r["known"] is not None and r["rank"] != 1),
                        key=lambda r: (r["rank"] or 99, r["key"]))[:cfg.worst],
    }
    if overall["checked_chunks"] == 0:
        report["leak_checks"]["skipped"] = "no query returned a chunk: leak checks ran on 0 chunks"
    return report

