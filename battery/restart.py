"""Restart under load: ``python -m battery.restart [--chunks 100000 --concurrency 16]``.

While the load generator runs, the server is stopped and started again twice: once gracefully
(SIGTERM) and once with SIGKILL. Before the first stop a probe set is recorded (the ranked ids
of fixed queries for several principals, and their visible counts); after every restart the
same probes must give the same answers (no corrupted index, no wrong answers), counts must
equal the ACL oracle, and every answer during the run is ACL-checked. Requests refused while
the server is down are counted as outage errors, not failures.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
import time

import httpx

from battery.loadgen import PERSONAS, Tally, Target, bench_dir, load_args, oracle_count, query_texts, run_load, tokens
from battery.result import exit_code, write_result
from bench.server import start_server


def probe(url: str, toks: dict[str, str], texts: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    with httpx.Client(timeout=60) as c:
        for p in PERSONAS:
            if p.forged:
                continue
            h = {"authorization": f"Bearer {toks[p.name]}"}
            out[f"{p.name}/count"] = c.get(f"{url}/v1/chunks/count", headers=h).json()["visible_chunks"]
            for mode in ("hybrid", "dense", "bm25"):
                for t in texts:
                    r = c.post(f"{url}/v1/search", headers=h, json={"query": t, "top_k": 10, "mode": mode})
                    out[f"{p.name}/{mode}/{t}"] = [x["id"] for x in r.json()["hits"]]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = load_args(port=8792)
    ap.add_argument("--phase-s", type=float, default=40.0, help="load between restarts")
    args = ap.parse_args(argv)
    started = time.time()
    d = bench_dir(args.data_dir, args.chunks)
    toks = tokens(d)
    texts = query_texts(args.scifact)
    url = f"http://127.0.0.1:{args.port}"
    proc = start_server(d, args.port)
    before = probe(url, toks, texts[:4])
    violations: list[str] = []
    counts_ok = all(before[f"{p.name}/count"] == oracle_count(args.chunks, p) for p in PERSONAS if not p.forged)
    if not counts_ok:
        violations.append("counts before the first restart differ from the oracle")
    target = Target(url)
    tally = Tally()
    restarts: list[dict[str, object]] = []
    total_s = args.phase_s * 3 + 600  # an upper bound: the load stops after the last phase
    done = threading.Event()
    result: dict[str, object] = {}

    def drive() -> None:
        result["tally"], result["wall"] = asyncio.run(run_load(target, toks, texts, n_chunks=args.chunks,
                                                               concurrency=args.concurrency, duration_s=total_s, tally=tally,
                                                               stop_when=done))

    loader = threading.Thread(target=drive)
    loader.start()
    try:
        for how in (signal.SIGTERM, signal.SIGKILL):
            time.sleep(args.phase_s)
            target.up = False
            t0 = time.time()
            proc.send_signal(how)
            proc.wait(timeout=120)
            proc = start_server(d, args.port)
            target.up = True
            down_s = round(time.time() - t0, 2)
            after = probe(url, toks, texts[:4])
            differing = [k for k in before if before[k] != after.get(k)]
            restarts.append({"signal": how.name, "down_s": down_s, "probes": len(before), "probes_differing": len(differing)})
            violations += [f"after {how.name}: probe {k} changed" for k in differing[:10]]
        time.sleep(args.phase_s)  # load on the restarted server
        done.set()
        loader.join()
    finally:
        done.set()
        target.up = False
        proc.terminate()
        proc.wait(timeout=60)
    figures = {"chunks": args.chunks, "concurrency": args.concurrency, "restarts": restarts,
               **{k: v for k, v in tally.figures(float(result.get("wall", total_s))).items() if k != "by_status"}}
    violations += tally.violations
    passed = (not violations and tally.leaks == 0 and tally.count_mismatches == 0 and tally.errors == 0
              and all(r["probes_differing"] == 0 for r in restarts) and tally.checked_hits > 0)
    cmd = f"python -m battery.restart --chunks {args.chunks} --concurrency {args.concurrency}"
    write_result("restart", passed=passed, figures=figures, command=cmd, violations=violations, started=started)
    print(figures)
    return exit_code(passed)


if __name__ == "__main__":
    sys.exit(main())
