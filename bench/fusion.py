"""Hybrid fusion settings measured on the shared datasets (BENCHMARKS.md, "Fusion: relative scores").

Each dataset's eval collection must exist (``clearance eval run --dataset ../shared/datasets/NAME``
builds it under ``var/eval/NAME-minilm``); nothing is re-embedded. For every configuration of the
grid, the same queries are asked through the production ``SearchService`` with only the ranking
settings changed, at two depths:

- **eval**: 300 chunks per query (prefetch 305), what ``clearance eval run`` ranks;
- **api**: 30 chunks per query (legs of ``prefetch_limit``: 50, or 100 where the grid entry says
  so, the default now), what a caller asking for 10 results gets its ranking from.

nDCG@10 over documents (a document ranks at its best chunk), as the eval harness scores it.

    python -m bench.fusion scifact med cisi cacm npl lisa   # writes bench/results/fusion-relative.{jsonl,md}
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from core.settings import RetrievalSettings
from eval.beir import load_beir
from eval.harness import ORG_NOW, EvalConfig, _metrics, _rank, _services, _unrestricted
from eval.organisation import simulate

# Legs of 50 (the default when the grid was first measured) unless an entry says otherwise, so a
# rerun measures what the committed table shows whatever the current default is.
GRID: list[dict[str, Any]] = [{"prefetch_limit": 50, **entry} for entry in [
    {"fusion": "rrf", "rrf_k": 30},  # the default before
    {"fusion": "rrf", "rrf_k": 60},
    {"fusion": "relative", "dense_weight": 0.5, "bm25_weight": 0.5},
    {"fusion": "relative", "dense_weight": 0.55, "bm25_weight": 0.45},
    {"fusion": "relative", "dense_weight": 0.6, "bm25_weight": 0.4},
    {"fusion": "relative", "dense_weight": 0.65, "bm25_weight": 0.35},
    {"fusion": "relative", "dense_weight": 0.7, "bm25_weight": 0.3},
    # Deeper legs: the api depth's ranking then comes from 100 chunks per leg instead of 50.
    {"fusion": "rrf", "rrf_k": 30, "prefetch_limit": 100},
    {"fusion": "relative", "dense_weight": 0.6, "bm25_weight": 0.4, "prefetch_limit": 100},
]]
DEPTHS = {"eval": 100, "api": 10}  # documents ranked; _rank asks for 3x as many chunks


def measure(name: str, datasets: Path, data_dir: Path, grid: list[dict[str, Any]],
            variant: str = "") -> list[dict[str, Any]]:
    ds = load_beir(datasets / name)
    org = simulate(list(ds.corpus), seed=13, now=ORG_NOW)
    work = data_dir / "eval" / f"{ds.name}-minilm{variant}"
    if not work.exists():
        raise SystemExit(f"{work} is missing: run `clearance eval run --dataset {datasets / name}` first")
    rows = []
    for overrides in grid:
        cfg = EvalConfig(work_dir=work, cache_path=data_dir / "cache" / "embeddings.sqlite3",
                         retrieval=RetrievalSettings(max_top_k=1000, **overrides))
        services = _services(cfg, org.tenant)
        try:
            scope = _unrestricted(org.tenant)
            row: dict[str, Any] = {"dataset": ds.name, **overrides, **({"collection": work.name} if variant else {})}
            for label, depth in DEPTHS.items():
                t0 = time.perf_counter()
                run = {q: _rank(services, scope, text, "hybrid", depth)[0] for q, text in ds.queries.items()}
                row[f"ndcg@10_{label}"] = round(_metrics(ds.qrels, run)[0]["ndcg@10"], 4)
                row[f"ms_{label}"] = round((time.perf_counter() - t0) * 1000 / len(ds.queries), 2)
        finally:
            services.close()
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def _label(row: dict[str, Any]) -> str:
    deep = f", prefetch {row['prefetch_limit']}" if row.get("prefetch_limit", 50) != 50 else ""
    if row["fusion"] == "rrf":
        return f"rrf k {row['rrf_k']}{deep}"
    return f"relative {row['dense_weight']:g} : {row['bm25_weight']:g}{deep}"


def markdown(rows: list[dict[str, Any]], names: list[str]) -> str:
    lines = []
    for label in DEPTHS:
        lines += [f"nDCG@10 at the {label} depth", "",
                  "| fusion (dense : bm25) | " + " | ".join(names) + " | mean |",
                  "|---|" + "---:|" * (len(names) + 1)]
        for cfg in dict.fromkeys(_label(r) for r in rows):
            vals = [next(r[f"ndcg@10_{label}"] for r in rows if r["dataset"] == n and _label(r) == cfg) for n in names]
            lines.append(f"| {cfg} | " + " | ".join(f"{v:.4f}" for v in vals) + f" | {sum(vals) / len(vals):.4f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("datasets", nargs="+")
    ap.add_argument("--shared", type=Path, default=Path("../shared/datasets"))
    ap.add_argument("--data-dir", type=Path, default=Path("var"))
    ap.add_argument("--out", type=Path, default=Path("bench/results/fusion-relative"))
    ap.add_argument("--config", action="append", type=json.loads, default=None,
                    help="a grid entry as JSON (repeat); default: the whole grid")
    ap.add_argument("--append", action="store_true", help="add to the results file's rows instead of replacing them")
    ap.add_argument("--variant", default="", help="collection suffix, e.g. --variant=-chunk800-100-200 (eval run with other chunking)")
    args = ap.parse_args()
    names = [load_beir(args.shared / n).name for n in args.datasets]
    rows = [r for n in args.datasets for r in measure(n, args.shared, args.data_dir, args.config or GRID, args.variant)]
    if args.append and args.out.with_suffix(".jsonl").exists():
        rows = [json.loads(line) for line in args.out.with_suffix(".jsonl").read_text().splitlines()] + rows
    args.out.with_suffix(".jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    args.out.with_suffix(".md").write_text(markdown(rows, names))
    print(markdown(rows, names))


if __name__ == "__main__":
    main()
