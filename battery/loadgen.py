"""An asyncio load generator for a live ``clearance serve`` over a bench index, checking answers.

The index is one built by ``python -m bench.engine --chunks N`` (``var/bench/n<N>``), whose ACLs
are a pure function of the chunk number (``bench.corpus.acl_draws``): every returned hit can be
checked against the oracle ``bench.corpus.visible`` without touching the index, and a caller's
visible-chunk count is known exactly.

Callers are a mix of principals: one group each at 1 %, 10 %, 50 % and 95 % visibility, a user
named in 3 % of the deny lists (holding the 95 % group), a user in two groups, a user in no group
(must see nothing), and a forged token (must get 401).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.corpus import DENIED_USER, NOW_TS, acl_draws, allow_list, chunk_number

MAX_AGE_S = 400 * 86_400  # about half the corpus is fresher than this


@dataclass(frozen=True)
class Persona:
    name: str
    subject: str
    groups: tuple[str, ...]
    forged: bool = False

    @property
    def principals(self) -> frozenset[str]:
        return frozenset({f"user:{self.subject}", *(f"group:{g}" for g in self.groups)})


PERSONAS = (
    Persona("vis01", "p01", ("vis01",)),
    Persona("vis10", "p10", ("vis10",)),
    Persona("vis50", "p50", ("vis50",)),
    Persona("vis95", "p95", ("vis95",)),
    Persona("denied", DENIED_USER.removeprefix("user:"), ("vis95",)),
    Persona("two-groups", "p0150", ("vis01", "vis50")),
    Persona("no-groups", "nobody", ()),
    Persona("forged", "mallory", ("vis95",), forged=True),
)


def oracle_count(n: int, p: Persona) -> int:
    """Visible chunks of ``n`` for ``p`` with no freshness bound (what /v1/chunks/count answers)."""
    k = np.arange(n)
    u, deny, _ = acl_draws(k)
    seen = np.zeros(n, dtype=bool)
    for g in p.groups:
        cut = {"vis01": 0.01, "vis05": 0.05, "vis10": 0.10, "vis50": 0.50, "vis95": 0.95}[g]
        seen |= u < cut
    if DENIED_USER in p.principals:
        seen &= ~deny
    return int(seen.sum())


def check_hit(hit_id: str, p: Persona, n: int, max_age_s: float, now: float) -> str | None:
    """Why this hit must not have been returned to ``p``, or None when it is entitled."""
    k = chunk_number(hit_id)
    if not 0 <= k < n:
        return f"{hit_id}: not a corpus chunk"
    u, deny, age = acl_draws(np.asarray([k]))
    if not set(allow_list(float(u[0]))) & p.principals:
        return f"chunk {k} (u={u[0]:.4f}) returned to {p.name} without a granting principal"
    if deny[0] and DENIED_USER in p.principals:
        return f"chunk {k} returned to {p.name} despite the deny entry"
    real_age = now - (NOW_TS - float(age[0]))
    if real_age > max_age_s + 120:  # 2 minutes of slack for the clock moving during the run
        return f"chunk {k} is {real_age / 86400:.1f} days old, beyond max_age"
    return None


@dataclass
class Tally:
    latencies_ms: list[float] = field(default_factory=list)
    requests: int = 0
    ok: int = 0
    errors: int = 0  # 5xx, timeouts, unexpected statuses while the server is up
    outage_errors: int = 0  # connection refused/reset while a restart is in progress
    forged_401: int = 0
    forged_other: int = 0
    checked_hits: int = 0
    checked_answers: int = 0
    counts_checked: int = 0
    count_mismatches: int = 0
    leaks: int = 0
    violations: list[str] = field(default_factory=list)
    by_status: dict[int, int] = field(default_factory=dict)

    def figures(self, wall_s: float) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)
        pct = (lambda q: round(lat[min(len(lat) - 1, int(q / 100 * (len(lat) - 1)))], 2)) if lat else (lambda q: None)
        return {
            "requests": self.requests, "ok": self.ok, "errors": self.errors,
            "error_rate": round(self.errors / max(1, self.requests), 5), "outage_errors": self.outage_errors,
            "p50_ms": pct(50), "p99_ms": pct(99), "mean_ms": round(statistics.fmean(lat), 2) if lat else None,
            "qps": round(self.ok / wall_s, 1) if wall_s else None,
            "answers_acl_checked": self.checked_answers, "hits_acl_checked": self.checked_hits, "leaks": self.leaks,
            "counts_checked": self.counts_checked, "count_mismatches": self.count_mismatches,
            "forged_tokens_sent": self.forged_401 + self.forged_other, "forged_rejected_401": self.forged_401,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
        }


class Target:
    """Where the server is and whether it is expected to be up (restarts flip this)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.up = True


def tokens(data_dir: Path) -> dict[str, str]:
    from auth.dev_issuer import DevIssuer
    from core.settings import AuthSettings

    issuer = DevIssuer(AuthSettings(dev_tenant="bench"), data_dir / "dev-issuer-key.pem")
    out = {}
    for p in PERSONAS:
        tok = issuer.mint(p.subject, groups=list(p.groups), ttl_s=6 * 3600)
        if p.forged:  # a valid token with one signature byte changed
            head, body, sig = tok.split(".")
            sig = ("A" if sig[10] != "A" else "B").join((sig[:10], sig[11:]))
            tok = ".".join((head, body, sig))
        out[p.name] = tok
    return out


async def run_load(target: Target, toks: dict[str, str], texts: list[str], *, n_chunks: int, concurrency: int,
                   duration_s: float, sample: float = 1.0, count_every: int = 50, seed: int = 0,
                   tally: Tally | None = None, stop_when: threading.Event | None = None) -> tuple[Tally, float]:
    tally = tally or Tally()
    rng = random.Random(seed)
    stop = time.monotonic() + duration_s
    expected_counts = {p.name: oracle_count(n_chunks, p) for p in PERSONAS if not p.forged}

    async def one(client: httpx.AsyncClient, i: int) -> None:
        p = PERSONAS[rng.randrange(len(PERSONAS))]
        headers = {"authorization": f"Bearer {toks[p.name]}"}
        counting = i % count_every == 0 and not p.forged
        t = time.perf_counter()
        was_up = target.up
        try:
            if counting:
                r = await client.get(f"{target.url}/v1/chunks/count", headers=headers)
            else:
                body = {"query": texts[rng.randrange(len(texts))], "top_k": rng.choice((5, 10, 20)),
                        "mode": rng.choice(("hybrid", "hybrid", "dense", "bm25")), "max_age": MAX_AGE_S}
                r = await client.post(f"{target.url}/v1/search", json=body, headers=headers)
        except httpx.TransportError as exc:
            tally.requests += 1
            if not (was_up and target.up):
                tally.outage_errors += 1
            else:
                tally.errors += 1
                tally.violations.append(f"transport error while up: {type(exc).__name__}")
            await asyncio.sleep(0.05)
            return
        dt = (time.perf_counter() - t) * 1000
        tally.requests += 1
        tally.by_status[r.status_code] = tally.by_status.get(r.status_code, 0) + 1
        if p.forged:
            if r.status_code == 401 and r.headers.get("www-authenticate", "").startswith("Bearer"):
                tally.forged_401 += 1
            else:
                tally.forged_other += 1
                tally.violations.append(f"forged token got {r.status_code}")
            return
        if r.status_code != 200:
            if r.status_code == 503 and not target.up:
                tally.outage_errors += 1
            else:
                tally.errors += 1
                tally.violations.append(f"{p.name}: HTTP {r.status_code} {r.text[:200]}")
            return
        tally.ok += 1
        tally.latencies_ms.append(dt)
        data = r.json()
        if counting:
            tally.counts_checked += 1
            if data["visible_chunks"] != expected_counts[p.name]:
                tally.count_mismatches += 1
                tally.violations.append(f"{p.name}: count {data['visible_chunks']} != oracle {expected_counts[p.name]}")
            return
        if rng.random() >= sample:
            return
        tally.checked_answers += 1
        now = time.time()
        for h in data["hits"]:
            tally.checked_hits += 1
            why = check_hit(h["id"], p, n_chunks, MAX_AGE_S, now)
            if why:
                tally.leaks += 1
                tally.violations.append(why)

    async def worker(w: int) -> None:
        i = w
        async with httpx.AsyncClient(timeout=60) as client:
            while time.monotonic() < stop and not (stop_when is not None and stop_when.is_set()):
                await one(client, i)
                i += concurrency

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return tally, time.perf_counter() - t0


def query_texts(scifact: Path, n: int = 500, seed: int = 11) -> list[str]:
    """Six-word spans of SciFact abstracts: the corpus the bench index's text and vectors come from."""
    import json

    rng = random.Random(seed)
    docs = [json.loads(line) for line in (scifact / "corpus.jsonl").open()]
    out = []
    for _ in range(n):
        words = docs[rng.randrange(len(docs))]["text"].lower().split()[:40]
        start = rng.randrange(max(1, len(words) - 6))
        out.append(" ".join(words[start:start + 6]) or "cell")
    return out


def load_args(port: int) -> argparse.ArgumentParser:
    """The options the load and restart checks share."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--chunks", type=int, default=100_000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--data-dir", type=Path, default=Path("var"))
    ap.add_argument("--scifact", type=Path, default=Path("../shared/datasets/scifact"))
    ap.add_argument("--port", type=int, default=port)
    return ap


def bench_dir(data_dir: Path, chunks: int) -> Path:
    d = data_dir / "bench" / f"n{chunks}"
    if not (d / "edge").exists():
        raise SystemExit(f"no bench index at {d}: build it with `python -m bench.engine --chunks {chunks} --build-only`")
    return d
