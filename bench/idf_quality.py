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

from bench.tokenization import DATASETS, READER, bm25_index, bm25_top10, ndcg10
from core.settings import RetrievalSettings
from eval.beir import load_beir
from eval.stability import rbo
from retrieval.scope_filter import CompiledFilter, compile_scope
from retrieval.service import idf_corpus

SIZES = (5000, 2000, 1000, 500)  # idf_sample_points compared with no sampling (default: 5,000)


def measure(ds_path: Path, tmp: Path) -> dict[str, float | int | None]:
    ds = load_beir(ds_path)
    index, enc = bm25_index(ds, tmp / ds.name)
    try:
        flt = compile_scope(READER, now=datetime.now(UTC))
        visible = index.count(flt)

        def ranked(corpus: CompiledFilter | None) -> dict[str, list[str]]:
            return bm25_top10(index, enc, ds, flt, idf_corpus=corpus)

        def ndcg(run: dict[str, list[str]]) -> float:
            return round(ndcg10(ds, run), 4)

        full = ranked(flt)
        row: dict[str, float | int | None] = {"docs": visible, "queries": len(ds.queries), "unsampled": ndcg(full)}
        for size in SIZES:
            corpus = idf_corpus(RetrievalSettings(idf_sample_points=size), READER, flt, index)
            if corpus is flt:  # the dataset is no larger than the sample
                row[f"sample_{size}"] = row[f"rbo_{size}"] = row[f"points_{size}"] = None
                continue
            run = ranked(corpus)
            row[f"sample_{size}"] = ndcg(run)
            row[f"rbo_{size}"] = round(statistics.mean(rbo(run[q], full[q]) for q in full if full[q]), 4)
            row[f"points_{size}"] = index.count(corpus)
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
        for name in DATASETS:
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
