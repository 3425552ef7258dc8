"""Identifier-aware fusion (``retrieval.identifiers``). Invariants: a chunk holding the exact
identifier of a hybrid query ranks first; the boost only reorders chunks the compiled scope
admitted (a hidden chunk holding the identifier never appears); without identifiers nothing
changes."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from core.settings import RetrievalSettings
from core.types import Entitlements, Scope
from retrieval.bm25 import Bm25Encoder
from retrieval.edge_index import EdgeIndex
from retrieval.embedder import HashEmbedder
from retrieval.identifiers import holds_all, identifier_tokens
from retrieval.index import IndexPoint
from retrieval.service import SearchService
from testkit.payloads import chunk_payload

EMB = HashEmbedder(64)
BM25 = Bm25Encoder()
ALICE = Scope(Entitlements("alice", "iss", "acme", frozenset({"group:finance"})))


def test_identifier_shapes() -> None:
    assert identifier_tokens("where is sentinel-valid-001 documented?") == ["sentinel-valid-001"]
    assert identifier_tokens("INC20931 and inc20931 and RFC 9068 in 2024") == ["INC20931"]
    assert identifier_tokens("travel policy") == []
    assert identifier_tokens("part 12.4.7 of v2") == ["12.4.7"]
    assert holds_all("see Sentinel-Valid-001.", ["sentinel-valid-001"])
    assert not holds_all("see sentinel-valid-0012", ["sentinel-valid-001"])


def _point(doc: str, text: str, allow: str = "group:finance") -> IndexPoint:
    return IndexPoint(str(uuid.uuid5(uuid.NAMESPACE_URL, doc)), EMB.embed([text])[0].tolist(), BM25.encode_document(text),
                      chunk_payload(tenant="acme", source="s", doc_id=doc, text=text, allow=[allow], modified_ts=1.8e9))


@pytest.fixture
def service(tmp_path: Path):  # noqa: ANN201
    index = EdgeIndex(tmp_path / "edge", EMB.dim)
    travel = [_point(f"travel-{i}", f"travel policy expenses hotel flights rules number {i}") for i in range(120)]
    common = [_point(f"code-{i}", f"travel flights form TF-100 filled in {i}") for i in range(12)]
    index.upsert([*travel, *common, _point("sentinel", "quarterly note mentioning sentinel-valid-001 once"),
                  _point("hidden", "sentinel-valid-001 travel policy secret", allow="group:hr")])
    yield lambda boost, **kw: SearchService(RetrievalSettings(identifier_boost=boost, **kw), index, EMB, BM25)
    index.close()


@pytest.mark.parametrize("fusion", ["relative", "rrf"])
def test_exact_identifier_ranks_first_in_hybrid_and_only_within_scope(service, fusion: str) -> None:  # noqa: ANN001
    q = "travel hotel flights sentinel-valid-001"
    plain = [h.doc_id for h in service(False, fusion=fusion).search(ALICE, q, top_k=10, mode="hybrid").hits]
    if fusion == "rrf":
        assert plain[0] != "sentinel"  # rank fusion alone loses it: the test is not vacuous
    boosted = [h.doc_id for h in service(True, fusion=fusion).search(ALICE, q, top_k=10, mode="hybrid").hits]
    assert boosted[0] == "sentinel"
    assert "hidden" not in boosted and "hidden" not in plain
    # the rest keep the fused order
    assert boosted[1:] == [d for d in plain if d != "sentinel"][:9]


def test_queries_without_identifiers_are_unchanged(service) -> None:  # noqa: ANN001
    q = "travel policy hotel"
    assert ([h.id for h in service(True).search(ALICE, q, top_k=10).hits]
            == [h.id for h in service(False).search(ALICE, q, top_k=10).hits])


def test_long_questions_and_common_identifiers_are_left_to_fusion(service) -> None:  # noqa: ANN001
    """The boost is for asking *for* a rare identifier: in a question longer than
    ``identifier_max_query_words``, or for an identifier more than ``identifier_max_chunks``
    chunks hold (TF-100: 12), fusion decides alone."""
    long_q = "travel policy hotel expenses flights for sentinel-valid-001"
    assert len(long_q.split()) > RetrievalSettings().identifier_max_query_words
    for q in (long_q, "travel flights TF-100"):
        assert ([h.id for h in service(True).search(ALICE, q, top_k=10, mode="hybrid").hits]
                == [h.id for h in service(False).search(ALICE, q, top_k=10, mode="hybrid").hits])
    # the same long question with a higher word limit is boosted: the gate, not the data, decided
    boosted = service(True, identifier_max_query_words=10).search(ALICE, long_q, top_k=10, mode="hybrid").hits
    assert boosted[0].doc_id == "sentinel"
    # and a common identifier is boosted once the cap admits it
    capped = service(True, identifier_max_chunks=20).search(ALICE, "travel flights TF-100", top_k=10, mode="hybrid").hits
    assert all("TF-100" in h.text for h in capped[:10])
