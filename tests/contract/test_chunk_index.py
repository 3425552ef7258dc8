"""One contract suite for every ``ChunkIndex``: Qdrant Edge (embedded default) and Qdrant server
through qdrant-client (its in-process local mode stands in for the server at small sizes).

Security invariants are part of the contract: the scope filter holds in every mode, in every
prefetch of a hybrid query, and for scroll and count; deny beats allow; tenants never mix.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC
from pathlib import Path

import numpy as np
import pytest

from core.settings import QdrantSettings
from core.types import Acl, Entitlements, Scope
from retrieval.bm25 import Bm25Encoder
from retrieval.embedder import HashEmbedder
from retrieval.index import ChunkIndex, IndexPoint, IndexQuery
from retrieval.payload import ChunkPayload, acl_fields
from retrieval.scope_filter import compile_scope, doc_filter
from testkit.payloads import chunk_payload

EMB = HashEmbedder(64)
BM25 = Bm25Encoder()
NOW = 1_800_000_000.0
DAY = 86_400.0


def make_index(kind: str, tmp: Path) -> ChunkIndex:
    if kind == "edge":
        from retrieval.edge_index import EdgeIndex

        return EdgeIndex(tmp / "edge", EMB.dim)
    from retrieval.server_index import QdrantServerIndex

    return QdrantServerIndex(QdrantSettings(local_path=":memory:", collection=f"c{uuid.uuid4().hex[:8]}"), EMB.dim)


@pytest.fixture(params=["edge", "server_local"])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ChunkIndex]:
    idx = make_index(request.param, tmp_path)
    yield idx
    idx.close()


def point(doc: str, i: int, text: str, allow: list[str], deny: list[str] = (), tenant: str = "acme",  # type: ignore[assignment]
          age_days: float = 1.0, source: str = "s", dense: list[float] | None = None) -> IndexPoint:
    return IndexPoint(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant}/{doc}#{i}")),
        dense=dense if dense is not None else EMB.embed([text])[0].tolist(),
        sparse=BM25.encode_document(text),
        payload=chunk_payload(tenant=tenant, source=source, doc_id=doc, chunk_index=i, text=text, allow=allow,
                              deny=deny, modified_ts=NOW - age_days * DAY),
    )


def scope(*principals: str, tenant: str = "acme", max_age_s: int | None = None) -> Scope:
    return Scope(Entitlements("u", "iss", tenant, frozenset(principals)), max_age_s=max_age_s)


# Every read mode, hybrid once per fusion ("hybrid+relative": ``retrieval.fusion``).
MODES = ["hybrid", "hybrid+relative", "dense", "bm25"]


def query(mode: str, text: str, limit: int = 10) -> IndexQuery:
    mode, _, fusion = mode.partition("+")
    return IndexQuery(mode=mode, limit=limit, dense=EMB.embed_query(text).tolist(), sparse=BM25.encode_query(text),  # type: ignore[arg-type]
                      prefetch_limit=50, rrf_k=60, fusion=fusion or "rrf")  # type: ignore[arg-type]


def flt(s: Scope):  # noqa: ANN201
    from datetime import datetime

    return compile_scope(s, now=datetime.fromtimestamp(NOW, UTC))


CORPUS = [
    point("fin/forecast", 0, "quarterly revenue forecast and ebitda", ["group:finance"]),
    point("hr/salaries", 0, "salary bands and revenue of compensation", ["group:hr"]),
    point("all/handbook", 0, "employee handbook revenue policy", ["tenant:acme"]),
    point("fin/board", 0, "board pack revenue acquisition", ["group:finance"], ["user:alice"]),
    point("old/report", 0, "old revenue report from last year", ["tenant:acme"], age_days=400),
    point("other/tenant", 0, "revenue of another company", ["tenant:globex"], tenant="globex"),
]


def ids(hits) -> set[str]:  # noqa: ANN001
    return {ChunkPayload.from_index(h.payload).doc_id for h in hits}


@pytest.mark.parametrize("mode", MODES)
def test_search_returns_only_visible_chunks(index: ChunkIndex, mode: str) -> None:
    index.upsert(CORPUS)
    got = ids(index.search(query(mode, "revenue", 50), flt(scope("user:alice", "group:finance", "tenant:acme"))))
    assert got == {"fin/forecast", "all/handbook", "old/report"}


@pytest.mark.parametrize("mode", MODES)
def test_deny_beats_allow(index: ChunkIndex, mode: str) -> None:
    index.upsert(CORPUS)
    alice = ids(index.search(query(mode, "board pack acquisition"), flt(scope("user:alice", "group:finance", "tenant:acme"))))
    bob = ids(index.search(query(mode, "board pack acquisition"), flt(scope("user:bob", "group:finance", "tenant:acme"))))
    assert "fin/board" not in alice and "fin/board" in bob


@pytest.mark.parametrize("mode", ["hybrid", "hybrid+relative"])
def test_tenants_never_mix(index: ChunkIndex, mode: str) -> None:
    index.upsert(CORPUS)
    got = ids(index.search(query(mode, "revenue", 50), flt(scope("tenant:acme", "tenant:globex"))))
    assert "other/tenant" not in got
    assert ids(index.search(query(mode, "revenue", 50), flt(scope("tenant:globex", tenant="globex")))) == {"other/tenant"}


def test_freshness_cutoff(index: ChunkIndex) -> None:
    index.upsert(CORPUS)
    got = ids(index.search(query("dense", "revenue report", 50), flt(scope("tenant:acme", max_age_s=int(30 * DAY)))))
    assert got == {"all/handbook"}


def test_hidden_best_match_never_surfaces_through_a_prefetch(index: ChunkIndex) -> None:
    # The invisible chunk is the best match in both legs; if any prefetch lacked the filter,
    # fusion would carry it to the top.
    index.upsert(CORPUS + [point("hr/secret", 0, "merger secret project falcon", ["group:hr"])])
    for mode in MODES:
        got = ids(index.search(query(mode, "merger secret project falcon", 50), flt(scope("tenant:acme", "group:finance"))))
        assert "hr/secret" not in got


@pytest.mark.parametrize("mode", MODES)
def test_hnsw_ef_changes_effort_not_scope(index: ChunkIndex, mode: str) -> None:
    # ``retrieval.hnsw_ef`` reaches the engine's dense leg (an ef below the limit is refused by
    # neither backend) and the answer keeps its scope.
    from dataclasses import replace

    index.upsert(CORPUS)
    s = flt(scope("user:alice", "group:finance", "tenant:acme"))
    base = index.search(query(mode, "revenue", 50), s)
    for ef in (1, 512):
        got = index.search(replace(query(mode, "revenue", 50), hnsw_ef=ef), s)
        assert ids(got) == {"fin/forecast", "all/handbook", "old/report"}
        # same ranking; equal scores (RRF ties) may come in either order from the engine
        assert sorted((round(-h.score, 6), h.id) for h in got) == sorted((round(-h.score, 6), h.id) for h in base)


def test_scroll_and_count_are_scoped(index: ChunkIndex) -> None:
    index.upsert(CORPUS)
    s = flt(scope("user:alice", "group:finance", "tenant:acme"))
    assert index.count(s) == 3
    assert ids(index.scroll(s, 100)) == {"fin/forecast", "all/handbook", "old/report"}
    assert index.scroll(doc_filter(s, "acme/s/hr/salaries"), 100) == []
    assert ids(index.scroll(doc_filter(s, "acme/s/fin/forecast"), 100)) == {"fin/forecast"}


def test_upsert_is_idempotent_and_delete_removes(index: ChunkIndex) -> None:
    index.upsert(CORPUS)
    index.upsert(CORPUS)
    assert index.size() == len(CORPUS)
    index.delete([CORPUS[0].id, str(uuid.uuid4())])
    assert index.size() == len(CORPUS) - 1
    assert index.retrieve([CORPUS[0].id]) == []


def test_set_payload_changes_acl_without_touching_vectors(index: ChunkIndex) -> None:
    index.upsert(CORPUS)
    s_hr = flt(scope("group:hr", "tenant:x"))
    assert "fin/forecast" not in ids(index.search(query("dense", "quarterly revenue forecast"), s_hr))
    index.set_payload([CORPUS[0].id], acl_fields(Acl(frozenset({"group:hr"}))))
    hits = index.search(query("dense", "quarterly revenue forecast and ebitda", 1), s_hr)
    assert ids(hits) == {"fin/forecast"} and hits[0].score > 0.99  # same vector as before


def test_set_payloads_applies_each_update_to_its_own_points_only(index: ChunkIndex) -> None:
    index.upsert(CORPUS)
    a, b, rest = CORPUS[0].id, CORPUS[1].id, [p.id for p in CORPUS[2:]]
    before = {h.id: h.payload for h in index.retrieve(rest)}
    index.set_payloads([([a], {"note": "first"}), ([], {"note": "nobody"}), ([b], {"note": "second"})])
    got = {h.id: h.payload for h in index.retrieve([a, b, *rest])}
    assert got[a]["note"] == "first" and got[b]["note"] == "second"
    assert {i: got[i] for i in rest} == before  # nothing else written
    index.set_payloads([])  # nothing to do is not an error


def test_hybrid_explain_reports_leg_ranks(index: ChunkIndex) -> None:
    index.upsert(CORPUS)
    q = IndexQuery(mode="hybrid", limit=5, dense=EMB.embed_query("revenue forecast").tolist(),
                   sparse=BM25.encode_query("revenue forecast"), prefetch_limit=50, rrf_k=60, with_legs=True)
    hits = index.search(q, flt(scope("group:finance", "tenant:acme")))
    assert hits and all(h.leg_ranks for h in hits)
    top = hits[0]
    # RRF with 0-based ranks in Qdrant: score = sum over legs of 1 / (k + rank0).
    expected = sum(1.0 / (60 + r - 1) for r in top.leg_ranks.values())
    assert top.score == pytest.approx(expected, rel=1e-4)


def test_relative_fusion_reports_leg_scores_and_scales_each_leg_by_its_best(index: ChunkIndex) -> None:
    index.upsert(CORPUS)
    q = IndexQuery(mode="hybrid", limit=5, dense=EMB.embed_query("revenue forecast").tolist(), with_dense=True,
                   sparse=BM25.encode_query("revenue forecast"), prefetch_limit=50, rrf_k=60, fusion="relative",
                   weights=(0.6, 0.4))
    s = flt(scope("group:finance", "tenant:acme"))
    hits = index.search(q, s)
    legs = {leg: index.search(replace(q, mode=leg, limit=50), s) for leg in ("dense", "bm25")}
    best = {leg: max(h.score for h in hits_) for leg, hits_ in legs.items()}
    assert hits and [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    for h in hits:
        # Both legs ran out of visible chunks before their limit, so a missing leg adds nothing.
        expected = sum(w * h.leg_scores[leg] / best[leg] for leg, w in (("dense", 0.6), ("bm25", 0.4)) if leg in h.leg_scores)
        assert h.score == pytest.approx(expected, rel=1e-5)
        assert h.dense is not None and len(h.dense) == EMB.dim  # vectors of returned chunks, for cosines
        assert ChunkPayload.from_index(h.payload).doc_id  # payload filled for every returned hit


def test_relative_fusion_drops_a_chunk_whose_acl_changes_while_it_is_fused(index: ChunkIndex,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The legs read ids under the filter; payloads are read afterwards under the same filter, so
    an ACL revoked in between removes the chunk instead of returning it with its new ACL."""
    import sys

    index.upsert(CORPUS)
    q, finance = query("hybrid+relative", "quarterly revenue forecast", 50), flt(scope("group:finance", "tenant:acme"))
    assert "fin/forecast" in ids(index.search(q, finance))  # visible until the revocation
    module = sys.modules[type(index).__module__]
    real = module.relative_fusion

    def revoke_meanwhile(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        out = real(*args, **kwargs)
        index.set_payload([CORPUS[0].id], acl_fields(Acl(frozenset({"group:hr"}))))  # fin/forecast leaves finance
        return out

    monkeypatch.setattr(module, "relative_fusion", revoke_meanwhile)
    got = ids(index.search(q, finance))
    assert "fin/forecast" not in got and "all/handbook" in got


def test_malformed_vectors_are_refused_before_the_engine(index: ChunkIndex) -> None:
    bad = IndexPoint(str(uuid.uuid4()), [float("nan")] * EMB.dim, BM25.encode_document("x"), {"tenant": "acme"})
    with pytest.raises(ValueError):
        index.upsert([bad])
    wrong_dim = IndexPoint(str(uuid.uuid4()), [0.1] * (EMB.dim + 1), BM25.encode_document("x"), {"tenant": "acme"})
    with pytest.raises(ValueError):
        index.upsert([wrong_dim])
    index.upsert(CORPUS)  # the index still works
    assert index.size() == len(CORPUS)


def test_backends_agree(tmp_path: Path) -> None:
    """Congruence: identical calls on both backends give identical ranked ids."""
    a, b = make_index("edge", tmp_path / "a"), make_index("server_local", tmp_path / "b")
    try:
        rng = np.random.default_rng(7)
        words = [f"w{n}" for n in range(300)]
        # Continuous random vectors: the hash embedder's integer counts tie too often.
        pts = [point(f"d{i}", 0, " ".join(rng.choice(words, 5 + i % 11)),
                     [f"group:g{i % 3}", "tenant:acme"] if i % 4 else [f"group:g{i % 3}"],
                     dense=rng.normal(size=EMB.dim).tolist()) for i in range(60)]
        # Random real-valued term weights too, so no leg has ties whose order is unspecified.

        from retrieval.bm25 import SparseVector

        def rand_sparse() -> SparseVector:
            idx = sorted(rng.choice(40, size=6, replace=False).tolist())
            return SparseVector(tuple(idx), tuple(rng.uniform(0.1, 3.0, size=6).tolist()))

        pts = [replace(p, sparse=rand_sparse()) for p in pts]
        a.upsert(pts)
        b.upsert(pts)
        s = flt(scope("group:g1", "tenant:acme"))
        for mode in MODES:
            for _ in range(5):
                iq = replace(query(mode, "unused"), dense=rng.normal(size=EMB.dim).tolist(), sparse=rand_sparse())
                ra, rb = a.search(iq, s), b.search(iq, s)
                # Same scores in the same order; ids may differ only within ties.
                assert [round(h.score, 4) for h in ra] == [round(h.score, 4) for h in rb], mode
                sa, sb = {h.id: round(h.score, 4) for h in ra}, {h.id: round(h.score, 4) for h in rb}
                assert all(sb[i] == sa[i] for i in sa.keys() & sb.keys())
        assert a.count(s) == b.count(s)
    finally:
        a.close()
        b.close()


def test_estimate_is_a_plausible_count(index: ChunkIndex) -> None:
    """The planner's cardinality estimate (exact dense search for small scopes) stays within the
    collection and tracks the exact count's order of magnitude."""
    index.upsert([point(f"d{i}", 0, f"text {i}", ["group:wide"] + (["group:narrow"] if i < 5 else [])) for i in range(200)])
    wide, narrow = flt(scope("group:wide")), flt(scope("group:narrow"))
    assert index.count(wide) == 200 and index.count(narrow) == 5
    assert 0 <= index.estimate(narrow) <= index.estimate(wide) <= 200
    assert index.estimate(wide) >= 100


# -- the search service's agent shapes on every backend: grouping, pages, metadata filters ------

def _service(index: ChunkIndex, fields: dict[str, str] | None = None):  # noqa: ANN202
    from core.settings import RetrievalSettings
    from retrieval.service import SearchService

    return SearchService(RetrievalSettings(exact_below_points=0), index, EMB, BM25, metadata_fields=fields)


def test_service_gives_the_dense_leg_its_hnsw_ef(index: ChunkIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.settings import RetrievalSettings
    from retrieval.service import SearchService

    index.upsert(CORPUS)
    sent: list[int | None] = []
    real = index.search
    monkeypatch.setattr(index, "search", lambda q, f: sent.append(q.hnsw_ef) or real(q, f))
    service = SearchService(RetrievalSettings(exact_below_points=0, hnsw_ef=64), index, EMB, BM25)
    got = service.search(scope("user:alice", "group:finance", "tenant:acme"), "revenue", top_k=10)
    assert {h.doc_id for h in got.hits} == {"fin/forecast", "all/handbook", "old/report"}
    assert sent and set(sent) == {64}


def test_service_samples_visible_idf_only_for_a_scope_above_the_cap(index: ChunkIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.settings import RetrievalSettings
    from retrieval.scope_filter import F_SAMPLE, Range
    from retrieval.service import SearchService, probed_size

    index.upsert(CORPUS + [point(f"bulk{i}", 0, f"bulk memo {i}", ["tenant:acme"]) for i in range(600)])
    sent: list[object] = []
    real = index.search
    monkeypatch.setattr(index, "search", lambda q, f: sent.append(q.idf_corpus) or real(q, f))
    caller = scope("user:alice", "group:finance", "tenant:acme")
    size = probed_size(index, flt(caller))
    assert size > 8
    for cap, expect_sampled in ((8, True), (size, False), (0, False)):
        sent.clear()
        SearchService(RetrievalSettings(idf_sample_points=cap), index, EMB, BM25).search(caller, "revenue", top_k=5, mode="bm25")
        (corpus,) = sent
        assert corpus is not None
        ranges = [c for c in corpus.must if isinstance(c, Range) and c.key == F_SAMPLE]  # type: ignore[attr-defined]
        assert len(ranges) == (1 if expect_sampled else 0)
        assert corpus.must[:len(corpus.must) - len(ranges)] == flt(caller).must  # type: ignore[attr-defined]


def _many(doc: str, n: int, allow: list[str], word: str = "zebra") -> list[IndexPoint]:
    return [point(doc, i, f"{word} {' '.join([word] * (n - i))} filler {doc} part {i}", allow) for i in range(n)]


@pytest.mark.parametrize("mode", ["hybrid", "dense", "bm25"])
def test_group_by_document_gives_one_entry_per_document(index: ChunkIndex, mode: str) -> None:
    from datetime import datetime

    index.upsert(_many("big", 12, ["tenant:acme"]) + _many("mid", 4, ["tenant:acme"]) + _many("small", 2, ["tenant:acme"])
                 + _many("hidden", 6, ["group:hr"]))
    s = Scope(Entitlements("u", "iss", "acme", frozenset({"user:u", "tenant:acme"})),
              modified_after=datetime.fromtimestamp(NOW - 10 * DAY, UTC))
    res = _service(index).search(s, "zebra", top_k=3, mode=mode, group_by="document", chunks_per_document=2)
    assert res.documents is not None
    docs = [g.doc_id for g in res.documents]
    assert sorted(docs) == ["big", "mid", "small"] and len(set(docs)) == 3
    assert all(1 <= len(g.hits) <= 2 and {h.doc_id for h in g.hits} == {g.doc_id} for g in res.documents)
    assert [g.score for g in res.documents] == sorted((g.score for g in res.documents), reverse=True)
    assert all(g.score == g.hits[0].score >= g.hits[-1].score for g in res.documents)
    assert [h.id for h in res.hits] == [h.id for g in res.documents for h in g.hits]  # what is audited
    one = _service(index).search(s, "zebra", top_k=1, mode=mode, group_by="document", chunks_per_document=5)
    assert one.documents is not None and len(one.documents) == 1 and one.more


@pytest.mark.parametrize("mode", ["bm25", "hybrid"])
@pytest.mark.parametrize("group_by", ["chunk", "document"])
def test_pages_never_repeat_and_stay_in_scope(index: ChunkIndex, group_by: str, mode: str) -> None:
    from retrieval.cursor import digest

    index.upsert(_many("a", 5, ["tenant:acme"]) + _many("b", 5, ["group:finance"]) + _many("c", 5, ["group:hr"])
                 + _many("d", 3, ["tenant:acme"], word="zebra") + [point("e", 0, "zebra", ["tenant:acme"], ["user:u"])])
    s = scope("user:u", "group:finance", "tenant:acme")
    svc, seen, shown, pages = _service(index), frozenset[str](), [], 0
    while True:
        res = svc.search(s, "zebra", top_k=2, mode=mode, group_by=group_by, chunks_per_document=10, seen=seen)  # type: ignore[arg-type]
        shown += [h for h in res.hits]
        seen = seen | {digest(i) for i in res.handed_out()}
        pages += 1
        if not res.more:
            break
        assert pages < 20
    assert len({h.id for h in shown}) == len(shown) == 13  # every visible chunk exactly once
    assert {h.doc_id for h in shown} == {"a", "b", "d"}


def test_metadata_filters_only_narrow(index: ChunkIndex) -> None:
    from core.errors import InvalidRequestError
    from retrieval.scope_filter import parse_metadata_filters

    def meta_point(doc: str, allow: list[str], **metadata: object) -> IndexPoint:
        p = point(doc, 0, f"zebra report {doc}", allow)
        return IndexPoint(p.id, p.dense, p.sparse, {**p.payload, "metadata": metadata})

    index.upsert([
        meta_point("emea-big", ["tenant:acme"], region="emea", amount=500, tags=["x", "y"], final="true", signed=1.7e9),
        meta_point("emea-small", ["tenant:acme"], region="emea", amount=5, tags=["y"], final="false", signed=1.6e9),
        meta_point("apac", ["tenant:acme"], region="apac", amount=50, tags=["z"], final="true", signed=1.8e9),
        meta_point("emea-hidden", ["group:hr"], region="emea", amount=500, tags=["x"], final="true", signed=1.7e9),
    ])
    fields = {"region": "str", "amount": "int", "tags": "list", "final": "bool", "score": "float", "signed": "date"}
    svc, s = _service(index, fields), scope("user:u", "tenant:acme")

    def docs(raw: dict[str, object], mode: str = "bm25") -> set[str]:
        res = svc.search(s, "zebra report", top_k=50, mode=mode, metadata=parse_metadata_filters(raw))  # type: ignore[arg-type]
        return {h.doc_id for h in res.hits}

    assert docs({}) == {"emea-big", "emea-small", "apac"}
    for mode in ("bm25", "dense", "hybrid"):
        assert docs({"region": "emea"}, mode) == {"emea-big", "emea-small"}
    assert docs({"region": ["emea", "apac"]}) == {"emea-big", "emea-small", "apac"}
    assert docs({"amount": {"gte": 10, "lt": 500}}) == {"apac"}
    assert docs({"amount": {"gte": 50}}) == {"emea-big", "apac"}
    assert docs({"amount": [5, 500]}) == {"emea-big", "emea-small"}
    assert docs({"tags": "y"}) == {"emea-big", "emea-small"}
    assert docs({"final": True, "region": "emea"}) == {"emea-big"}
    # dates are stored as epoch seconds (ingest.contracts.typed_metadata): 1.7e9 is 2023-11-14
    assert docs({"signed": {"gte": "2023-01-01", "lt": "2024-01-01"}}) == {"emea-big"}
    assert docs({"signed": {"gte": "2023-11-14T22:13:20+00:00"}}) == {"emea-big", "apac"}
    for bad in ({"owner": "bob"}, {"region": {"gte": 1}}, {"amount": "five"}, {"score": 1.5}, {"final": "yes"},
                {"amount": {"gte": None}}, {"region": []}):
        with pytest.raises(InvalidRequestError):
            docs(bad)  # type: ignore[arg-type]
