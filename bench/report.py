"""Render bench/results/*.json into BENCHMARKS.md (markdown tables, with the machine)."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

RESULTS = Path("bench/results")


def _mem_gb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return 0.0


# What the tables cannot say by themselves; kept here so regenerating keeps it.
NOTES = """
## Not measured yet

1M chunks (engine and end to end) was not run in this session: building the 1M index alone takes
about 25 minutes on this machine. `make bench` includes it (`BENCH_SIZES`).

## Reading these figures

- End-to-end p50 at concurrency 1 is about twice the floor (query encoding ~16.5 ms with fp32
  MiniLM on 2 AVX2 cores, plus the engine); JWT validation, the audit write, HTTP and JSON make
  up the rest, and the load generator shares the two cores. At concurrency 4 and 8 the two cores
  are saturated by query encoding, so throughput stays near 22 qps and latency grows with the queue.
- Between 5 % and 10 % visibility, filtered HNSW without payload-aware links loses the graph:
  dense recall@10 vs exact fell to 0.19 at 10 % on 100k chunks. ACORN (`retrieval.acorn`, on by
  default) restores it (0.97) and is faster there too. Payload indexes stay `enable_hnsw=false`
  to keep index builds short.
- The ingest ratio depends on batch size: 64 documents per batch reached 86 % of the embedder's
  own throughput, 256 (the default, `ingest.batch_docs`) 97 %.
"""


def render(results: Path = RESULTS) -> str:
    def load(pattern: str) -> list[dict]:
        return sorted((json.loads(p.read_text()) for p in results.glob(pattern)), key=lambda r: r.get("chunks", r.get("docs", 0)))

    cpu = platform.processor() or platform.machine()
    lines = ["# Benchmarks", "", f"Machine: {os.cpu_count()} cores ({cpu}), {_mem_gb()} GB RAM, {platform.platform()}.",
             "Every figure below is produced by `make bench` (or the command shown) and read from "
             "`bench/results/*.json`; tests never assert timings.", ""]
    engine = load("engine-*.json")
    if engine:
        lines += ["## Engine-side search (Qdrant Edge, in-process)", "",
                  "`python -m bench.engine --chunks N`: scoped queries through `EdgeIndex.search` (ACL in every prefetch "
                  "and the top level, freshness 365 days, payload returned), 280 timed queries after 20 warm-up.", "",
                  "| chunks | ACL visible | dense p50/p99 ms | bm25 p50/p99 ms | hybrid p50/p99 ms | hybrid qps (1 thread) |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for r in engine:
            for sel, modes in r["latency"].items():
                d, b, h = modes["dense"], modes["bm25"], modes["hybrid"]
                lines.append(f"| {r['chunks']:,} | {sel} | {d['p50_ms']} / {d['p99_ms']} | {b['p50_ms']} / {b['p99_ms']} | "
                             f"{h['p50_ms']} / {h['p99_ms']} | {h['qps_1_thread']} |")
        lines += ["", "Dense recall@10 against exact search under the ACL filter (100 queries): the default plan "
                  "(exact search when the scope is estimated at ≤ `retrieval.exact_below_points` chunks, else ACORN) / "
                  "ACORN always / plain filtered HNSW:", "", "| chunks | 1 % | 5 % | 10 % | 50 % |", "|---:|---:|---:|---:|---:|"]
        for r in engine:
            rec = r.get("recall_at_10_vs_exact", {})
            lines.append(f"| {r['chunks']:,} | " + " | ".join(
                f"{rec[s].get('default', '–')} / {rec[s]['acorn']} / {rec[s]['plain']}" if s in rec else "–"
                for s in ("1%", "5%", "10%", "50%")) + " |")
        lines += ["", "| chunks | generate + upsert pts/s | optimize s | reopen s | index on disk | peak RSS |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for r in engine:
            b = r.get("build", {})
            lines.append(f"| {r['chunks']:,} | {b.get('upsert_points_per_s', '–')} | {b.get('optimize_s', '–')} | {r['reopen_s']} | "
                         f"{r['index_bytes'] / 2**20:.0f} MiB | {r['peak_rss_mb']} MiB |")
    e2e = load("e2e-*.json")
    if e2e:
        lines += ["", "## End to end over HTTP", "",
                  "`python -m bench.e2e --chunks N`: `clearance serve` on loopback, a load generator in another process; "
                  "each request: JWT validation, query encoding with the real model, hybrid + ACL (10 % visible) + freshness, JSON response.", "",
                  "| chunks | concurrency | p50 ms | p99 ms | qps | errors | cold start s | encode p50 ms (torch) | engine p50 ms | p50 / floor | server peak RSS |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in e2e:
            fl = r["floor"]
            torch_ms = f" ({fl['encode_torch_p50_ms']})" if "encode_torch_p50_ms" in fl else ""
            rss = f"{r['server_peak_rss_mb']:.0f} MiB" if r.get("server_peak_rss_mb") else "–"
            for row in r["load"]:
                first = row["concurrency"] == 1
                lines.append(f"| {r['chunks']:,} | {row['concurrency']} | {row['p50_ms']} | {row['p99_ms']} | {row['qps']} | "
                             f"{row['errors']} | {r['cold_start_s']} | {fl['encode_p50_ms']}{torch_ms} | {fl['engine_p50_ms']} | "
                             f"{r['ratio_to_floor_p50'] if first else ''} | {rss if first else ''} |")
    ingest = load("ingest-*.json")
    if ingest:
        lines += ["", "## Ingestion throughput", "", "`python -m bench.ingest --docs N` (SciFact documents, fresh store, no cache).", "",
                  "| docs | chunks | embedder alone chunks/s | end-to-end chunks/s | ratio |", "|---:|---:|---:|---:|---:|"]
        for r in ingest:
            lines.append(f"| {r['docs']:,} | {r['chunks']:,} | {r['embedder_chunks_per_s']} | {r['ingest_chunks_per_s']} | {r['ratio']:.0%} |")
    return "\n".join(lines) + "\n" + NOTES


if __name__ == "__main__":
    Path("BENCHMARKS.md").write_text(render())
    print("wrote BENCHMARKS.md")
