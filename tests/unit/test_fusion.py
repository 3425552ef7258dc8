"""Relative score fusion (``retrieval.fusion``), against an oracle written from its definition.

Invariants: fusion only reorders what the legs returned (never adds a chunk); each leg counts
relative to its own best score; a chunk a leg did not return gets that leg's last score when the
leg was cut at its limit and nothing when the leg ran out; ties go by id; the limit holds.
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from retrieval.fusion import relative_fusion
from retrieval.index import IndexHit


def leg(pairs: list[tuple[str, float]]) -> list[IndexHit]:
    return [IndexHit(cid, score, {"id": cid}) for cid, score in sorted(pairs, key=lambda p: (-p[1], p[0]))]


def oracle(dense: list[IndexHit], sparse: list[IndexHit], w: tuple[float, float], leg_limit: int) -> dict[str, float]:
    out: dict[str, float] = {}
    ids = {h.id for h in dense} | {h.id for h in sparse}
    for hits, weight in ((dense, w[0]), (sparse, w[1])):
        scores = {h.id: h.score for h in hits}
        best = max(scores.values(), default=0.0)
        cut = len(hits) >= leg_limit
        for cid in ids:
            if best <= 0:
                part = 0.0
            elif cid in scores:
                part = scores[cid] / best
            else:
                part = min(scores.values()) / best if cut else 0.0
            out[cid] = out.get(cid, 0.0) + weight * part
    return out


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


scores = st.floats(min_value=-0.5, max_value=40.0, allow_nan=False)
legs = st.lists(st.tuples(st.sampled_from([f"c{i}" for i in range(12)]), scores), max_size=8,
                unique_by=lambda p: p[0])


@settings(max_examples=300, deadline=None)
@given(legs, legs, st.floats(0.0, 1.0), st.integers(1, 8), st.integers(1, 20))
def test_matches_the_oracle_and_only_reorders(d: list, s: list, wd: float, leg_limit: int, limit: int) -> None:
    dense, sparse = leg(d)[:leg_limit], leg(s)[:leg_limit]
    got = relative_fusion(dense, sparse, weights=(wd, 1 - wd), leg_limit=leg_limit, limit=limit)
    expected = oracle(dense, sparse, (wd, 1 - wd), leg_limit)
    assert {h.id for h in got} <= expected.keys()  # nothing the legs did not return
    assert len(got) == min(limit, len(expected))
    left_out = expected.keys() - {h.id for h in got}
    assert all(expected[h.id] >= expected[c] or close(expected[h.id], expected[c]) for h in got for c in left_out)
    for h in got:
        assert close(h.score, expected[h.id])
        assert h.payload == {"id": h.id}
    assert [h.score for h in got] == sorted((h.score for h in got), reverse=True)


def test_a_cut_leg_gives_absent_chunks_its_last_score_an_exhausted_leg_nothing() -> None:
    dense = leg([("a", 0.8), ("b", 0.4)])
    sparse = leg([("c", 10.0)])
    cut = {h.id: h.score for h in relative_fusion(dense, sparse, weights=(1, 1), leg_limit=2, limit=10)}
    # sparse ran out (1 < 2): "a" and "b" get nothing from it; dense was cut: "c" gets 0.4 / 0.8.
    assert cut == {"a": 1.0, "b": 0.5, "c": 1.0 + 0.5}


def test_a_leg_without_positive_scores_cannot_order() -> None:
    dense = leg([("a", -0.1), ("b", -0.2)])
    sparse = leg([("b", 3.0), ("a", 1.0)])
    got = relative_fusion(dense, sparse, weights=(0.9, 0.1), leg_limit=5, limit=5)
    assert [h.id for h in got] == ["b", "a"]


def test_leg_ranks_and_scores_are_reported() -> None:
    dense = leg([("a", 0.9), ("b", 0.5)])
    sparse = leg([("b", 4.0)])
    got = {h.id: h for h in relative_fusion(dense, sparse, weights=(0.6, 0.4), leg_limit=10, limit=10)}
    assert got["b"].leg_ranks == {"dense": 2, "bm25": 1} and got["b"].leg_scores == {"dense": 0.5, "bm25": 4.0}
    assert got["a"].leg_ranks == {"dense": 1}
