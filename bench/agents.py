"""Agent-facing search paths against plain REST search, same server, same queries, one run:
``POST /v1/search`` (chunks), ``POST /v1/search`` with ``group_by: "document"``, and the MCP
``search`` tool over streamable HTTP (a JSON-RPC ``tools/call`` posted to ``/mcp``, the wire
format any MCP host sends; the SDK client's own overhead is not the server's). Phases alternate
in rounds so drift (page cache, the other core) spreads over all three; concurrency 1.

    python -m bench.agents --chunks 100000      # needs the bench index: python -m bench.engine --chunks 100000 --build-only
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench.corpus import SELECTIVITY
from bench.corpus import queries as make_queries
from bench.e2e import mint
from bench.engine import common_args, index_path, pct, seed_from_cache
from bench.server import start_server

MAX_AGE = 365 * 86_400 * 3
MCP_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


def _rest(client: httpx.Client, base: str, text: str, grouped: bool) -> bool:
    body: dict[str, Any] = {"query": text, "top_k": 10, "mode": "hybrid", "max_age": MAX_AGE}
    if grouped:
        body["group_by"] = "document"
    r = client.post(f"{base}/v1/search", json=body)
    return r.status_code == 200


def _mcp(client: httpx.Client, base: str, text: str, i: int) -> bool:
    call = {"jsonrpc": "2.0", "id": i, "method": "tools/call",
            "params": {"name": "search", "arguments": {"query": text, "top_k": 10, "mode": "hybrid", "max_age": MAX_AGE}}}
    r = client.post(f"{base}/mcp", json=call, headers=MCP_HEADERS)
    return r.status_code == 200 and "error" not in r.json()


PATHS = ("rest", "rest_grouped", "mcp")


def run(base: str, token: str, texts: list[str], rounds: int, per_round: int) -> dict[str, Any]:
    lat: dict[str, list[float]] = {p: [] for p in PATHS}
    errors = dict.fromkeys(PATHS, 0)
    with httpx.Client(timeout=30, headers={"authorization": f"Bearer {token}"}) as client:
        for w in range(10):  # warm-up, every path
            _rest(client, base, texts[w], False)
            _rest(client, base, texts[w], True)
            _mcp(client, base, texts[w], w)
        n = 0
        for r in range(rounds):
            order = PATHS if r % 2 == 0 else PATHS[::-1]
            for path in order:
                for k in range(per_round):
                    text = texts[(r * per_round + k) % len(texts)]
                    n += 1
                    t = time.perf_counter()
                    ok = (_mcp(client, base, text, n) if path == "mcp"
                          else _rest(client, base, text, path == "rest_grouped"))
                    dt = (time.perf_counter() - t) * 1000
                    if ok:
                        lat[path].append(dt)
                    else:
                        errors[path] += 1
    out: dict[str, Any] = {}
    for path in PATHS:
        xs = lat[path]
        out[path] = {"requests": len(xs), "errors": errors[path], "p50_ms": round(pct(xs, 50), 2),
                     "p99_ms": round(pct(xs, 99), 2), "mean_ms": round(sum(xs) / max(len(xs), 1), 2)}
    for path in ("rest_grouped", "mcp"):
        out[f"{path}_over_rest_p50"] = round(out[path]["p50_ms"] / out["rest"]["p50_ms"], 3)
        out[f"{path}_over_rest_p99"] = round(out[path]["p99_ms"] / out["rest"]["p99_ms"], 3)
    return out


def main() -> None:
    ap = common_args()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--per-round", type=int, default=30)
    ap.add_argument("--port", type=int, default=8766)
    args = ap.parse_args()
    server_dir = index_path(args.data_dir, args.chunks).parent
    if not (server_dir / "edge").exists():
        sys.exit(f"build the index first: python -m bench.engine --chunks {args.chunks} --build-only")
    seed = seed_from_cache(args.data_dir, args.scifact)
    texts = [t for t, _ in make_queries(seed, 300, rng_seed=7)]
    token = mint(server_dir, SELECTIVITY["10%"])
    proc = start_server(server_dir, args.port)
    try:
        report = {"chunks": args.chunks, "cores": os.cpu_count(), "acl_visible": "10%", "concurrency": 1,
                  **run(f"http://127.0.0.1:{args.port}", token, texts, args.rounds, args.per_round)}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    args.out.mkdir(parents=True, exist_ok=True)
    path: Path = args.out / f"agents-{args.chunks}.json"
    path.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
