"""BM25 term statistics never cross entitlements (``retrieval.idf_scope``), on both backends.

The attack: a caller who can read one document holding a rare term (a codename) watches that
document's BM25 score while documents they cannot see gain and lose the term. With IDF over
the whole index the score moves, revealing how many hidden documents hold it; with IDF over the
caller's visible scope (the default) it does not move at all.
"""

from __future__ import annotations

from datetime import UTC, datetime

from core.settings import RetrievalSettings
from core.types import Entitlements, Scope
from retrieval.index import ChunkIndex, IndexQuery
from retrieval.scope_filter import compile_scope
from retrieval.service import idf_corpus
from tests.contract.test_chunk_index import BM25, NOW, index, point  # noqa: F401  (the backend fixture)

ALICE = Scope(Entitlements("alice", "iss", "acme", frozenset({"user:alice", "group:finance"})))
TERM = "zorblax"


def _alice_score(idx: ChunkIndex, idf_scope: str, sample_points: int = 0) -> float:
    flt = compile_scope(ALICE, now=datetime.fromtimestamp(NOW, UTC))
    settings = RetrievalSettings(idf_scope=idf_scope, idf_sample_points=sample_points)  # type: ignore[arg-type]
    q = IndexQuery(mode="bm25", limit=5, dense=None, sparse=BM25.encode_query(f"{TERM} budget"), prefetch_limit=5,
                   rrf_k=60, idf_corpus=idf_corpus(settings, ALICE, flt, idx))
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


def test_sampled_visible_idf_is_a_fixed_part_of_the_scope_and_ignores_hidden_documents(index: ChunkIndex) -> None:  # noqa: F811
    # A scope larger than ``idf_sample_points`` gets its statistics from a sample of itself: the
    # sample holds only visible chunks, is the same on every query, and neither whether to sample
    # nor how much depends on hidden documents (the engine's own estimate of the scope does: it
    # is derived from whole-index cardinalities), so the score does not move when they change.
    many = [point(f"m{i}", 0, f"{TERM if i % 5 == 0 else 'memo'} item {i} of the archive", ["group:finance"])
            for i in range(400)]
    index.upsert([VISIBLE, *FILLER, *many])
    flt = compile_scope(ALICE, now=datetime.fromtimestamp(NOW, UTC))
    settings = RetrievalSettings(idf_sample_points=16)
    corpus = idf_corpus(settings, ALICE, flt, index)
    assert corpus is not None and corpus != flt  # sampled: the probe saw more than 16 chunks
    visible_ids = {h.id for h in index.scroll(flt, 1000)}
    sample_ids = {h.id for h in index.scroll(corpus, 1000)}
    assert sample_ids and sample_ids < visible_ids  # a proper, non-empty subset
    before = _alice_score(index, "visible", sample_points=16)
    assert before == _alice_score(index, "visible", sample_points=16)
    crowd = [point(f"x{i}", 0, f"{TERM} hidden memo {i}", ["group:hr"]) for i in range(600)]
    index.upsert(HIDDEN + OTHER_TENANT + crowd)
    assert idf_corpus(settings, ALICE, flt, index) == corpus
    assert {h.id for h in index.scroll(corpus, 1000)} == sample_ids
    assert _alice_score(index, "visible", sample_points=16) == before
    index.delete([p.id for p in HIDDEN[:5]] + [p.id for p in crowd[:300]])
    assert idf_corpus(settings, ALICE, flt, index) == corpus
    assert _alice_score(index, "visible", sample_points=16) == before


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
