"""BM25 term statistics never cross entitlements (``retrieval.idf_scope``), on both backends.

The attack: a caller who can read one document holding a rare term (a codename) watches that
document's BM25 score while documents they cannot see gain and lose the term. With IDF over
the whole index the score moves, revealing how many hidden documents hold it; with IDF over the
caller's visible scope (the default) it does not move at all.
"""

from __future__ import annotations

from datetime import UTC, datetime

from core.types import Entitlements, Scope
from retrieval.index import ChunkIndex, IndexQuery
from retrieval.scope_filter import compile_scope
from retrieval.service import idf_corpus
from tests.contract.test_chunk_index import BM25, NOW, index, point  # noqa: F401  (the backend fixture)

ALICE = Scope(Entitlements("alice", "iss", "acme", frozenset({"user:alice", "group:finance"})))
TERM = "zorblax"


def _alice_score(idx: ChunkIndex, idf_scope: str) -> float:
    flt = compile_scope(ALICE, now=datetime.fromtimestamp(NOW, UTC))
    q = IndexQuery(mode="bm25", limit=5, dense=None, sparse=BM25.encode_query(f"{TERM} budget"), prefetch_limit=5,
                   rrf_k=60, idf_corpus=idf_corpus(idf_scope, ALICE, flt))
    hits = idx.search(q, flt)
    assert [h.id for h in hits][:1] == [VISIBLE.id]
    return hits[0].score


VISIBLE = point("plan", 0, f"{TERM} budget plan for the quarter", ["group:finance"])
FILLER = [point(f"f{i}", 0, f"budget note number {i} for finance", ["group:finance"]) for i in range(6)]
HIDDEN = [point(f"h{i}", 0, f"{TERM} layoff list draft {i}", ["group:hr"]) for i in range(8)]
OTHER_TENANT = [point(f"t{i}", 0, f"{TERM} merger {i}", ["tenant:globex"], tenant="globex") for i in range(8)]


def test_visible_idf_scores_do_not_move_when_hidden_documents_change(index: ChunkIndex) -> None:  # noqa: F811
    index.upsert([VISIBLE, *FILLER])
    before = _alice_score(index, "visible")
    index.upsert(HIDDEN + OTHER_TENANT)
    assert _alice_score(index, "visible") == before
    index.delete([p.id for p in HIDDEN[:5]])
    assert _alice_score(index, "visible") == before


def test_global_idf_leaks_and_tenant_idf_confines_to_the_tenant(index: ChunkIndex) -> None:  # noqa: F811
    # The attack is real under global IDF (so the test above is not vacuous) ...
    index.upsert([VISIBLE, *FILLER])
    global_before, tenant_before = _alice_score(index, "global"), _alice_score(index, "tenant")
    index.upsert(OTHER_TENANT)
    assert _alice_score(index, "global") != global_before
    # ... and "tenant" keeps other tenants' documents out of the statistics.
    assert _alice_score(index, "tenant") == tenant_before


def test_empty_corpus_weighs_terms_alike_and_ignores_every_other_document(index: ChunkIndex) -> None:  # noqa: F811
    # The identifier lookup's corpus (``scope_filter.empty_corpus``): no statistics at all, so the
    # score moves neither with hidden nor with visible documents; both backends accept it.
    from retrieval.scope_filter import empty_corpus

    flt = compile_scope(ALICE, now=datetime.fromtimestamp(NOW, UTC))
    q = IndexQuery(mode="bm25", limit=5, dense=None, sparse=BM25.encode_query(f"{TERM} budget"), prefetch_limit=5,
                   rrf_k=60, idf_corpus=empty_corpus(flt))
    index.upsert([VISIBLE, *FILLER])
    before = index.search(q, flt)
    assert before[0].id == VISIBLE.id
    index.upsert(HIDDEN + OTHER_TENANT + [point(f"v{i}", 0, f"{TERM} visible twin {i}", ["group:finance"]) for i in range(4)])
    after = {h.id: h.score for h in index.search(q, flt)}
    assert after[VISIBLE.id] == before[0].score
