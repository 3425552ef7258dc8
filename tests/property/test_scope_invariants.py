"""Property tests of the security invariants, against an oracle computed from the ACL data
alone (never from ranking):

- no hit outside entitlements, in any mode, for search, scroll and count;
- deny beats allow; tenants never mix; every hit is at least as fresh as the cutoff;
- every visible chunk is reachable (dense/hybrid with a limit above the corpus return exactly
  the visible set; bm25 returns every visible chunk that shares a query term);
- an empty principal set is refused before the index is touched.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import EmptyScopeError
from core.types import Entitlements, Scope
from retrieval.bm25 import tokenize
from retrieval.index import ChunkIndex, IndexQuery
from retrieval.scope_filter import compile_scope
from tests.contract.test_chunk_index import BM25, DAY, EMB, NOW, make_index, point

USERS = [f"user:u{i}" for i in range(5)]
GROUPS = [f"group:g{i}" for i in range(6)]
POOL = USERS + GROUPS + ["tenant:T"]  # "tenant:T" is replaced by the example's tenant
WORDS = "revenue salary forecast policy incident merger budget roadmap contract audit".split()

doc_st = st.fixed_dictionaries({
    "allow": st.lists(st.sampled_from(POOL), max_size=3, unique=True),
    "deny": st.lists(st.sampled_from(USERS + GROUPS), max_size=2, unique=True),
    "age_days": st.floats(min_value=0, max_value=800, allow_nan=False),
    "words": st.lists(st.sampled_from(WORDS), min_size=1, max_size=6),
    "foreign": st.booleans(),
})
caller_st = st.fixed_dictionaries({
    "principals": st.lists(st.sampled_from(USERS + GROUPS), max_size=5, unique=True),
    "with_tenant": st.booleans(),
    "max_age_days": st.one_of(st.none(), st.integers(min_value=1, max_value=900)),
    "query": st.lists(st.sampled_from(WORDS), min_size=1, max_size=3),
})


@pytest.fixture(scope="module", params=["edge", "server_local"])
def shared_index(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChunkIndex]:
    idx = make_index(request.param, tmp_path_factory.mktemp(request.param))
    yield idx
    idx.close()


def _materialise(docs: list[dict], tenant: str) -> tuple[list, dict[str, dict]]:
    pts, meta = [], {}
    for n, d in enumerate(docs):
        allow = [tenant_p if p == "tenant:T" else p for p in d["allow"] for tenant_p in [f"tenant:{tenant}"]]
        t = f"{tenant}x" if d["foreign"] else tenant
        p = point(f"d{n}", 0, " ".join(d["words"]), allow, d["deny"], tenant=t, age_days=d["age_days"])
        pts.append(p)
        meta[p.id] = {"tenant": t, "allow": set(allow), "deny": set(d["deny"]), "age": d["age_days"], "words": set(d["words"])}
    return pts, meta


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(docs=st.lists(doc_st, min_size=1, max_size=25), caller=caller_st)
def test_every_read_path_matches_the_oracle(shared_index: ChunkIndex, docs: list[dict], caller: dict) -> None:
    tenant = uuid.uuid4().hex[:12]  # a fresh tenant isolates this example inside the shared index
    pts, meta = _materialise(docs, tenant)
    shared_index.upsert(pts)
    principals = set(caller["principals"]) | ({f"tenant:{tenant}"} if caller["with_tenant"] else set())
    max_age = caller["max_age_days"] * int(DAY) if caller["max_age_days"] else None
    scope = Scope(Entitlements("u", "iss", tenant, frozenset(principals)), max_age_s=max_age)
    if not principals:
        with pytest.raises(EmptyScopeError):
            compile_scope(scope)
        return
    flt = compile_scope(scope, now=datetime.fromtimestamp(NOW, UTC))

    def visible(m: dict) -> bool:
        return (m["tenant"] == tenant and bool(m["allow"] & principals) and not (m["deny"] & principals)
                and (max_age is None or m["age"] * DAY <= max_age))

    oracle = {pid for pid, m in meta.items() if visible(m)}
    n = len(pts) + 5
    qtext = " ".join(caller["query"])
    qterms = set(tokenize(qtext))
    for mode in ("dense", "hybrid", "bm25"):
        q = IndexQuery(mode=mode, limit=n, dense=EMB.embed_query(qtext).tolist(), sparse=BM25.encode_query(qtext),  # type: ignore[arg-type]
                       prefetch_limit=n, rrf_k=60)
        got = {h.id for h in shared_index.search(q, flt)}
        assert got <= oracle, f"{mode} leaked {got - oracle}"
        if mode == "bm25":
            reachable = {pid for pid in oracle if set(tokenize(" ".join(meta[pid]["words"]))) & qterms}
            assert got == reachable
        else:
            assert got == oracle, f"{mode} missed {oracle - got}"
    assert {h.id for h in shared_index.scroll(flt, n)} == oracle
    assert shared_index.count(flt) == len(oracle)
