"""Sustained load with answer checking: ``python -m battery.load [--minutes 10 --concurrency 16]``.

A real ``clearance serve`` over a bench index of ≥ 100k chunks (``python -m bench.engine
--chunks 100000 --build-only`` builds it), driven on loopback by an asyncio load generator in
this process with mixed principals (``battery.loadgen.PERSONAS``). Every answer's hits are
checked against the ACL oracle; every 50th request is a count checked for equality.
Fails on any leak, count mismatch, forged token not refused with 401, or error rate ≥ 0.1 %.
"""

from __future__ import annotations

import asyncio
import sys
import time

from battery.loadgen import Target, bench_dir, load_args, query_texts, run_load, tokens
from battery.result import exit_code, write_result
from bench.server import peak_rss_mb, start_server


def main(argv: list[str] | None = None) -> int:
    ap = load_args(port=8791)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--sample", type=float, default=1.0, help="share of answers whose hits are ACL-checked")
    args = ap.parse_args(argv)
    started = time.time()
    d = bench_dir(args.data_dir, args.chunks)
    toks = tokens(d)
    texts = query_texts(args.scifact)
    proc = start_server(d, args.port)
    try:
        target = Target(f"http://127.0.0.1:{args.port}")
        asyncio.run(run_load(target, toks, texts[:20], n_chunks=args.chunks, concurrency=2, duration_s=10))  # warm-up
        tally, wall = asyncio.run(run_load(target, toks, texts, n_chunks=args.chunks, concurrency=args.concurrency,
                                           duration_s=args.minutes * 60, sample=args.sample))
        rss = peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    figures = {"chunks": args.chunks, "concurrency": args.concurrency, "minutes": args.minutes,
               **tally.figures(wall), "server_peak_rss_mb": rss}
    passed = (tally.leaks == 0 and tally.count_mismatches == 0 and tally.forged_other == 0
              and tally.errors / max(1, tally.requests) < 0.001 and tally.checked_hits > 0 and tally.counts_checked > 0)
    cmd = f"python -m battery.load --chunks {args.chunks} --minutes {args.minutes:g} --concurrency {args.concurrency}"
    write_result("load", passed=passed, figures=figures, command=cmd, violations=tally.violations, started=started)
    print(figures)
    return exit_code(passed)


if __name__ == "__main__":
    sys.exit(main())
