"""What sampled visible IDF (``retrieval.idf_sample_points``) costs in ranking quality: BM25
nDCG@10 per shared BEIR dataset with IDF over every visible chunk against IDF over fixed samples
of a few sizes, and how far each sampled top 10 moves from the unsampled one (RBO@10). The
sample's size, not its share of the scope, decides how well it estimates document frequencies,
so sizes far below the default show the margin.

    python -m bench.idf_quality --out bench/results
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import ir_measures
import numpy as np
from ir_measures import nDCG

from core.settings import RetrievalSettings
from core.types import Entitlements, Scope
from eval.beir import load_beir
from eval.stability import rbo
from retrieval.bm25 import Bm25Encoder
from retrieval.edge_index import EdgeIndex
from retrieval.index import IndexPoint, IndexQuery
from retrieval.payload import ChunkPayload
from retrieval.scope_filter import compile_scope
from retrieval.service import idf_corpus
from testkit.payloads import chunk_payload

SIZES = (5000, 2000, 1000, 500)  # idf_sample_points compared with no sampling (default: 5,000)


def measure(ds_path: Path, tmp: Path) -> dict[str, float | int | None]:
    ds = load_beir(ds_path)
    texts = {d: f"{t} {x}" for d, (t, x) in ds.corpus.items()}
    probe = Bm25Encoder()
    enc = Bm25Encoder(avg_len=float(np.mean([len(probe.tokenize(t)) for t in texts.values()])))
    index = EdgeIndex(tmp / ds.name, 4)
    try:
        ids = list(texts)
        for start in range(0, len(ids), 2000):
            index.upsert([IndexPoint(f"00000000-0000-0000-0000-{start + i:012d}", [1.0, 0, 0, 0], enc.encode_document(texts[d]),
                                     chunk_payload(tenant="t", source="s", doc_id=d, allow=["tenant:t"]))
                          for i, d in enumerate(ids[start:start + 2000])])
        scope = Scope(Entitlements("u", "i", "t", frozenset({"tenant:t"})))
        flt = compile_scope(scope, now=datetime.now(UTC))
        visible = index.count(flt)

        def ranked(corpus: object) -> dict[str, list[str]]:
            out = {}
            for q, text in ds.queries.items():
                hits = index.search(IndexQuery(mode="bm25", limit=10, dense=None, sparse=enc.encode_query(text),
                                               prefetch_limit=10, rrf_k=60, idf_corpus=corpus), flt)  # type: ignore[arg-type]
                out[q] = [ChunkPayload.from_index(h.payload).doc_id for h in hits]
            return out

        def ndcg(run: dict[str, list[str]]) -> float:
            scored = {q: {d: float(10 - i) for i, d in enumerate(docs)} for q, docs in run.items()}
            return round(float(ir_measures.calc_aggregate([nDCG @ 10], ds.qrels, scored)[nDCG @ 10]), 4)

        full = ranked(flt)
        row: dict[str, float | int | None] = {"docs": visible, "queries": len(ds.queries), "unsampled": ndcg(full)}
        for size in SIZES:
            corpus = idf_corpus(RetrievalSettings(idf_sample_points=size), scope, flt, index)
            if corpus is flt:  # the dataset is no larger than the sample
                row[f"sample_{size}"] = row[f"rbo_{size}"] = row[f"points_{size}"] = None
                continue
            run = ranked(corpus)
            row[f"sample_{size}"] = ndcg(run)
            row[f"rbo_{size}"] = round(statistics.mean(rbo(run[q], full[q]) for q in full if full[q]), 4)
            row[f"points_{size}"] = index.count(corpus)  # type: ignore[arg-type]
        return row
    finally:
        index.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", type=Path, default=Path("../shared/datasets"))
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    args = ap.parse_args()
    table: dict[str, dict[str, float | int | None]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("scifact", "cisi", "cacm", "med", "npl", "lisa"):
            table[name] = measure(args.datasets / name, Path(tmp))
            print(name, table[name], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "idf-sampling-quality.json").write_text(json.dumps(table, indent=1))
    lines = ["BM25 nDCG@10, IDF over every visible chunk and over a fixed sample of about N of them "
             "(RBO@10 against the unsampled top 10 in brackets; — where the dataset is smaller than N)", "",
             "| dataset | docs | unsampled | " + " | ".join(f"N = {s:,}" for s in SIZES) + " |",
             "|---|---:|---:|" + "---:|" * len(SIZES)]

    def cell(row: dict[str, float | int | None], size: int) -> str:
        v = row[f"sample_{size}"]
        return "—" if v is None else f"{v:.4f} ({row[f'rbo_{size}']:.2f})"

    for name, row in table.items():
        lines.append(f"| {name} | {row['docs']:,} | {row['unsampled']:.4f} | " + " | ".join(cell(row, s) for s in SIZES) + " |")
    (args.out / "idf-sampling-quality.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
