"""Label-free stability of rankings between two runs of the same query set.

- **RBO@10** (rank-biased overlap, Webber, Moffat & Zobel 2010, p = 0.9): the extrapolated
  form ``RBO_ext`` over the top 10 of each list, with the uneven-length correction (eq. 32), so
  two identical lists score 1.0 even when shorter than 10, and two disjoint lists 0.0. With
  p = 0.9 the first rank carries 10 % of the weight and the top 10 about 65 %.
- **Jaccard@10**: |A ∩ B| / |A ∪ B| of the two top-10 sets (order-blind); 1.0 when both are empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

RBO_P = 0.9
DEPTH = 10


def rbo(a: Sequence[str], b: Sequence[str], p: float = RBO_P, depth: int = DEPTH) -> float:
    """Extrapolated rank-biased overlap of the first ``depth`` items of two rankings."""
    if not 0.0 < p < 1.0:
        raise ValueError("p must be in (0, 1)")
    s_list, l_list = list(dict.fromkeys(a))[:depth], list(dict.fromkeys(b))[:depth]
    if len(s_list) > len(l_list):
        s_list, l_list = l_list, s_list
    s, ln = len(s_list), len(l_list)
    if ln == 0:
        return 1.0  # both empty: nothing changed
    if s == 0:
        return 0.0
    seen_s: set[str] = set()
    seen_l: set[str] = set()
    overlap = 0
    x: list[int] = [0]  # x[d] = overlap of the two prefixes of length d (the shorter one stops at s)
    for d in range(1, ln + 1):
        item_l = l_list[d - 1]
        if d <= s:
            item_s = s_list[d - 1]
            if item_s == item_l:
                overlap += 1
            else:
                overlap += (item_s in seen_l) + (item_l in seen_s)
            seen_s.add(item_s)
        else:
            overlap += item_l in seen_s
        seen_l.add(item_l)
        x.append(overlap)
    total = sum(x[d] / d * p ** d for d in range(1, ln + 1))
    total += sum(x[s] * (d - s) / (s * d) * p ** d for d in range(s + 1, ln + 1))
    return float((1 - p) / p * total + ((x[ln] - x[s]) / ln + x[s] / s) * p ** ln)


def jaccard(a: Sequence[str], b: Sequence[str], depth: int = DEPTH) -> float:
    sa, sb = set(list(a)[:depth]), set(list(b)[:depth])
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)


def compare(current: dict[str, list[str]], baseline: dict[str, list[str]], *, worst: int = 10) -> dict[str, Any]:
    """Per-query RBO@10 and Jaccard@10 over the queries both runs hold; the most changed first."""
    common = sorted(current.keys() & baseline.keys())
    per_query = {q: {"rbo": round(rbo(current[q], baseline[q]), 6), "jaccard": round(jaccard(current[q], baseline[q]), 6)}
                 for q in common}
    changed = sorted(common, key=lambda q: (per_query[q]["rbo"], per_query[q]["jaccard"], q))
    n = len(common)
    return {
        "p": RBO_P, "depth": DEPTH, "queries": n,
        "only_in_run": len(current.keys() - baseline.keys()), "only_in_baseline": len(baseline.keys() - current.keys()),
        "rbo_mean": round(sum(v["rbo"] for v in per_query.values()) / n, 6) if n else None,
        "jaccard_mean": round(sum(v["jaccard"] for v in per_query.values()) / n, 6) if n else None,
        "unchanged": sum(1 for q in common if current[q][:DEPTH] == baseline[q][:DEPTH]),
        "per_query": per_query,
        "most_changed": [{"query": q, **per_query[q], "run": current[q][:DEPTH], "baseline": baseline[q][:DEPTH]}
                         for q in changed[:worst] if per_query[q]["rbo"] < 1.0],
    }
