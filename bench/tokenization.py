"""Choose BM25 tokenization by measurement: nDCG@10 of the BM25 leg (our sparse vectors, the
engine's IDF, inside Qdrant Edge) with and without stemming and stop words, per BEIR dataset.

    python -m bench.tokenization --out bench/results
"""

from __future__ import annotations

import argparse
import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import ir_measures
import numpy as np
from ir_measures import nDCG

from core.types import Entitlements, Scope
from eval.beir import Dataset, load_beir
from retrieval.bm25 import Bm25Encoder
from retrieval.edge_index import EdgeIndex
from retrieval.index import IndexPoint, IndexQuery
from retrieval.payload import ChunkPayload
from retrieval.scope_filter import CompiledFilter, compile_scope
from testkit.payloads import chunk_payload

VARIANTS = {"stem+stop": (True, True), "stem only": (True, False), "stop only": (False, True), "neither": (False, False)}
DATASETS = ("scifact", "cisi", "cacm", "med", "npl", "lisa")  # the shared BEIR sets
READER = Scope(Entitlements("u", "i", "t", frozenset({"tenant:t"})))  # sees every document of a bm25_index


def bm25_index(ds: Dataset, path: Path, *, stem: bool = True, stop: bool = True) -> tuple[EdgeIndex, Bm25Encoder]:
    """A BM25-only Qdrant Edge index of a BEIR corpus (one chunk per document, a placeholder dense
    vector, every document visible to ``READER``) and the encoder fitted to its mean length."""
    texts = {d: f"{t} {x}" for d, (t, x) in ds.corpus.items()}
    probe = Bm25Encoder(stem=stem, stop_words=stop)
    enc = Bm25Encoder(stem=stem, stop_words=stop, avg_len=float(np.mean([len(probe.tokenize(t)) for t in texts.values()])))
    index = EdgeIndex(path, 4)
    ids = list(texts)
    for start in range(0, len(ids), 2000):
        index.upsert([IndexPoint(f"00000000-0000-0000-0000-{start + i:012d}", [1.0, 0, 0, 0], enc.encode_document(texts[d]),
                                 chunk_payload(tenant="t", source="s", doc_id=d, allow=["tenant:t"]))
                      for i, d in enumerate(ids[start:start + 2000])])
    return index, enc


def bm25_top10(index: EdgeIndex, enc: Bm25Encoder, ds: Dataset, flt: CompiledFilter,
               idf_corpus: CompiledFilter | None = None) -> dict[str, list[str]]:
    """Each query's BM25 top 10 (document ids, in order) under ``flt``."""
    out = {}
    for q, text in ds.queries.items():
        hits = index.search(IndexQuery(mode="bm25", limit=10, dense=None, sparse=enc.encode_query(text),
                                       prefetch_limit=10, rrf_k=60, idf_corpus=idf_corpus), flt)
        out[q] = [ChunkPayload.from_index(h.payload).doc_id for h in hits]
    return out


def ndcg10(ds: Dataset, run: dict[str, list[str]]) -> float:
    scored = {q: {d: float(10 - i) for i, d in enumerate(docs)} for q, docs in run.items()}
    return float(ir_measures.calc_aggregate([nDCG @ 10], ds.qrels, scored)[nDCG @ 10])


def ndcg(ds_path: Path, stem: bool, stop: bool, tmp: Path) -> float:
    ds = load_beir(ds_path)
    index, enc = bm25_index(ds, tmp / f"{ds.name}-{int(stem)}{int(stop)}", stem=stem, stop=stop)
    try:
        return ndcg10(ds, bm25_top10(index, enc, ds, compile_scope(READER, now=datetime.now(UTC))))
    finally:
        index.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", type=Path, default=Path("../shared/datasets"))
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    args = ap.parse_args()
    table: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in DATASETS:
            table[name] = {v: round(ndcg(args.datasets / name, *flags, Path(tmp)), 4) for v, flags in VARIANTS.items()}
            print(name, table[name], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tokenization.json").write_text(json.dumps(table, indent=1))
    lines = ["| dataset | " + " | ".join(VARIANTS) + " |", "|---|" + "---:|" * len(VARIANTS)]
    for name, row in table.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[v]:.4f}" for v in VARIANTS) + " |")
    means = {v: np.mean([row[v] for row in table.values()]) for v in VARIANTS}
    lines.append("| mean | " + " | ".join(f"{means[v]:.4f}" for v in VARIANTS) + " |")
    (args.out / "tokenization.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
