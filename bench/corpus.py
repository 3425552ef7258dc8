"""Synthetic corpora for benchmarks, scaling to 1M chunks with realistic statistics.

- Text: words drawn from SciFact's own vocabulary with its Zipf-like frequencies, lengths drawn
  from SciFact's abstract lengths (so BM25 posting lists look real).
- Dense vectors: real all-MiniLM-L6-v2 embeddings of SciFact chunks (from the embedding cache),
  each reused with Gaussian noise (sigma 0.05 per dimension before re-normalising) — embedding
  1M chunks on 2 cores would take hours, and the perturbed copies keep the real geometry
  (clusters, anisotropy) that HNSW and filtered search are sensitive to.
- ACLs: every chunk k draws u ~ U[0, 1) as a pure function of k (:func:`acl_draws`, so a load
  generator can check any returned chunk without the index); it allows ``group:vis01`` if u < .01, ``group:vis05`` if
  u < .05, ``group:vis10`` if u < .10, ``group:vis50`` if u < .50 and ``group:vis95`` if u < .95, so a caller holding one of
  those groups sees exactly that share. A further 3 % carry a deny entry for ``user:denied``.
- Freshness: ``modified_ts`` uniform over the last two years.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrieval.bm25 import Bm25Encoder
from retrieval.index import IndexPoint
from retrieval.payload import ChunkPayload, PayloadField
from testkit.payloads import chunk_payload

SELECTIVITY = {"1%": "group:vis01", "5%": "group:vis05", "10%": "group:vis10", "50%": "group:vis50", "95%": "group:vis95"}
TWO_YEARS_S = 730 * 86_400
NOW_TS = 1_795_000_000.0


@dataclass(frozen=True)
class Seed:
    """What the generator samples from: SciFact's texts, vectors and vocabulary."""

    texts: list[str]
    vectors: np.ndarray
    vocab: list[str]
    probs: np.ndarray
    lengths: np.ndarray


def load_seed(scifact: Path, embedder, limit: int | None = None) -> Seed:  # noqa: ANN001
    docs = [json.loads(line) for line in (scifact / "corpus.jsonl").open()][:limit]
    texts = [f"{d['title']}\n{d['text']}" for d in docs]
    return _seed(texts, np.asarray(embedder.embed(texts), dtype=np.float32))


def load_seed_from_index(edge_path: Path) -> Seed:
    """The real chunk vectors and texts of an ingested SciFact collection (e.g. the eval's)."""
    import qdrant_edge as qe

    shard = qe.EdgeShard.load(str(edge_path))
    texts: list[str] = []
    vecs: list[list[float]] = []
    offset = None
    try:
        while True:
            req = qe.ScrollRequest(offset=offset, limit=1000, with_payload=[PayloadField.TEXT.value], with_vector=["dense"])
            records, offset = shard.scroll(req)
            for r in records:
                texts.append(ChunkPayload.from_index(r.payload or {}).text)
                vecs.append(list(r.vector["dense"]))  # type: ignore[index]
            if offset is None:
                break
    finally:
        shard.close()
    return _seed(texts, np.asarray(vecs, dtype=np.float32))


def _seed(texts: list[str], vectors: np.ndarray) -> Seed:
    counts: Counter[str] = Counter()
    lengths = []
    for t in texts:
        words = t.lower().split()
        counts.update(words)
        lengths.append(len(words))
    vocab, freq = zip(*counts.most_common(30_000))
    probs = np.asarray(freq, dtype=np.float64)
    return Seed(texts, vectors, list(vocab), probs / probs.sum(), np.asarray(lengths))


ACL_CUTS = ((0.01, "group:vis01"), (0.05, "group:vis05"), (0.10, "group:vis10"), (0.50, "group:vis50"), (0.95, "group:vis95"))
DENY_SHARE = 0.03
DENIED_USER = "user:denied"


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def acl_draws(k: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(u, denied, age_s) of chunks ``k``: a pure function of the chunk number."""
    k = np.asarray(k, dtype=np.uint64)
    scale = float(2**53)
    u = (_splitmix64(k * np.uint64(3)) >> np.uint64(11)).astype(np.float64) / scale
    deny = (_splitmix64(k * np.uint64(3) + np.uint64(1)) >> np.uint64(11)).astype(np.float64) / scale < DENY_SHARE
    age = (_splitmix64(k * np.uint64(3) + np.uint64(2)) >> np.uint64(11)).astype(np.float64) / scale * TWO_YEARS_S
    return u, deny, age


def allow_list(u: float) -> list[str]:
    return [g for cut, g in ACL_CUTS if u < cut] or ["group:nobody"]


def chunk_number(point_id: str) -> int:
    return uuid.UUID(point_id).int - 1


def visible(k: int, principals: frozenset[str], max_age_s: float | None = None) -> bool:
    """The oracle: may a caller holding ``principals`` see chunk ``k``? Independent of the index."""
    u, deny, age = acl_draws(np.asarray([k]))
    if deny[0] and DENIED_USER in principals:
        return False
    if max_age_s is not None and age[0] > max_age_s:
        return False
    return bool(set(allow_list(float(u[0]))) & principals)


def generate(seed: Seed, n: int, *, tenant: str = "bench", rng_seed: int = 0, batch: int = 2000,
             bm25: Bm25Encoder | None = None) -> Iterator[list[IndexPoint]]:
    rng = np.random.default_rng(rng_seed)
    enc = bm25 or Bm25Encoder()
    vocab = np.asarray(seed.vocab)
    cdf = np.cumsum(seed.probs)  # sampling by searchsorted: O(log V) a word instead of O(V) a call
    for start in range(0, n, batch):
        m = min(batch, n - start)
        base = rng.integers(0, len(seed.vectors), size=m)
        vecs = seed.vectors[base] + rng.normal(0, 0.05, size=(m, seed.vectors.shape[1])).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        lens = np.clip(rng.choice(seed.lengths, size=m), 20, 400)
        u, deny, ages = acl_draws(np.arange(start, start + m))
        out = []
        for i in range(m):
            words = vocab[np.minimum(np.searchsorted(cdf, rng.random(int(lens[i]))), len(vocab) - 1)]
            text = " ".join(words.tolist())
            allow = allow_list(float(u[i]))
            k = start + i
            out.append(IndexPoint(
                id=str(uuid.UUID(int=k + 1)), dense=vecs[i].tolist(), sparse=enc.encode_document(text),
                payload=chunk_payload(tenant=tenant, source=f"s{k % 8}", doc_id=f"d{k // 3}", chunk_index=k % 3,
                                      text=text[:600], allow=allow, deny=[DENIED_USER] if deny[i] else [],
                                      modified_ts=NOW_TS - float(ages[i])),
            ))
        yield out


def queries(seed: Seed, n: int, rng_seed: int = 1) -> list[tuple[str, np.ndarray]]:
    """Query texts (a short span of a seed text) and their vectors (the seed vector, perturbed)."""
    rng = np.random.default_rng(rng_seed)
    out = []
    for _ in range(n):
        i = int(rng.integers(0, len(seed.texts)))
        words = seed.texts[i].lower().split()[:40]
        start = int(rng.integers(0, max(1, len(words) - 6)))
        v = seed.vectors[i] + rng.normal(0, 0.08, size=seed.vectors.shape[1]).astype(np.float32)
        out.append((" ".join(words[start:start + 6]), v / np.linalg.norm(v)))
    return out
