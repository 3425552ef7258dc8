"""The dense plan (exact search or the HNSW graph) is sized from the caller's own chunks, on both
backends, so documents the caller cannot see never change it.

The attack: the plan shows in a caller's latency (exact search over a large scope is slow) and in
recall. The engine's ``estimate`` combines whole-index cardinalities: adding hidden *stale*
documents lowers the fresh share of the index, and with it the estimate of a caller's fresh
scope, though not one of the caller's chunks changed.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from core.settings import RetrievalSettings
from retrieval.index import ChunkIndex, IndexQuery
from retrieval.scope_filter import compile_scope
from retrieval.service import SearchService, probed_size
from tests.contract.test_chunk_index import BM25, DAY, EMB, NOW, index, point, scope  # noqa: F401  (the backend fixture)

ALICE = scope("user:alice", "group:finance", max_age_s=30 * 86_400)
VEC = EMB.embed(["memo"])[0].tolist()


def _write(idx: ChunkIndex, prefix: str, n: int, allow: list[str], age_days: object) -> None:
    """``n`` chunks of ``age_days(i)`` days old by the wall clock, which the service's freshness
    clause reads (``point`` dates from the fixed ``NOW``)."""
    shift = (NOW - time.time()) / DAY
    for start in range(0, n, 1000):
        idx.upsert([point(f"{prefix}{i}", 0, "memo", allow, age_days=shift + age_days(i), dense=VEC)  # type: ignore[operator]
                    for i in range(start, min(n, start + 1000))])


def _plans(idx: ChunkIndex, settings: RetrievalSettings, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    sent: list[bool] = []
    real = idx.search

    def spy(q: IndexQuery, f: object) -> object:
        sent.append(q.exact)
        return real(q, f)  # type: ignore[arg-type]

    monkeypatch.setattr(idx, "search", spy)
    service = SearchService(settings, idx, EMB, BM25)
    for mode in ("dense", "hybrid"):
        service.search(ALICE, "memo", top_k=5, mode=mode)
    monkeypatch.undo()
    return sent


def test_hidden_documents_never_change_the_dense_plan(index: ChunkIndex, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
                                                     request: pytest.FixtureRequest) -> None:
    _write(index, "v", 4000, ["group:finance"], lambda i: 1 if i % 2 else 60)  # 2,000 fresh chunks alice sees
    flt = compile_scope(ALICE, now=datetime.now(UTC))  # as the service compiles it
    probed, estimate = probed_size(index, flt), index.estimate(flt)
    assert 1000 < probed < 4000  # the probe counts her 2,000 fresh chunks (1/128 of them, scaled)
    # just below both sizes: the graph is planned, and must stay planned
    settings = RetrievalSettings(exact_below_points=min(probed, estimate) - 1)
    before = _plans(index, settings, monkeypatch)
    assert before == [False, False]
    _write(index, "h", 8000, ["group:hr"], lambda i: 60)  # hidden and stale
    assert index.count(flt) == 2000 and probed_size(index, flt) == probed
    if request.node.callspec.params["index"] == "edge":
        # the channel this closes: Edge's estimate fell (2,013 -> 684 here) below the threshold,
        # so a plan taken from it would have flipped to exact search
        assert index.estimate(flt) <= settings.exact_below_points
    assert _plans(index, settings, monkeypatch) == before
    _write(index, "g", 3000, ["group:hr"], lambda i: 1)  # hidden and fresh
    assert _plans(index, settings, monkeypatch) == before
