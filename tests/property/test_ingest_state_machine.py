"""A state machine of grant / revoke / edit / re-ingest / delete through the real ingestion
pipeline, catalog and Edge index. After every step, what each caller can read through the
search service equals what the catalog says they may read (the oracle), and ACL-only changes
never call the embedder.
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from app.services import Services, build_services
from core.types import Acl, Entitlements, Scope, SourceDocument
from tests.api.test_push import CountingEmbedder
from tests.conftest import make_settings

PRINCIPALS = ["user:ann", "user:ben", "group:red", "group:blue", "tenant:acme"]
CALLERS = [frozenset({"user:ann", "group:red", "tenant:acme"}), frozenset({"user:ben", "group:blue", "tenant:acme"}),
           frozenset({"user:cat", "tenant:acme"}), frozenset({"group:red", "group:blue"})]
acl_st = st.builds(lambda a, d: Acl(frozenset(a), frozenset(d)),
                   st.lists(st.sampled_from(PRINCIPALS), max_size=3, unique=True),
                   st.lists(st.sampled_from(PRINCIPALS[:4]), max_size=1, unique=True))
text_st = st.lists(st.sampled_from("alpha beta gamma delta epsilon zeta eta theta".split()), min_size=3, max_size=40).map(" ".join)


class IngestMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp())
        self.embedder = CountingEmbedder()
        self.services: Services = build_services(make_settings(self.tmp), embedder=self.embedder)
        self.docs: dict[str, tuple[str, Acl]] = {}

    def teardown(self) -> None:
        self.services.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _doc(self, doc_id: str, text: str, acl: Acl) -> SourceDocument:
        return SourceDocument("push", doc_id, f"push://{doc_id}", f"{doc_id}.txt", text.encode(), acl,
                              datetime(2026, 1, 1, tzinfo=UTC))

    @rule(n=st.integers(0, 7), text=text_st, acl=acl_st)
    def put(self, n: int, text: str, acl: Acl) -> None:
        doc_id = f"doc{n}"
        before = self.embedder.texts
        outcome, _ = self.services.ingestor.apply(self._doc(doc_id, text, acl))
        old = self.docs.get(doc_id)
        if old is not None and old[0] == text:
            assert outcome in ("unchanged", "acl_updated")
            assert self.embedder.texts == before, "an ACL-only change must not embed"
        self.docs[doc_id] = (text, acl)

    @precondition(lambda self: bool(self.docs))
    @rule(data=st.data(), acl=acl_st)
    def change_acl(self, data: st.DataObject, acl: Acl) -> None:
        doc_id = data.draw(st.sampled_from(sorted(self.docs)))
        before = self.embedder.texts
        self.services.ingestor.set_acl(self.services.ingestor.doc_key("push", doc_id), acl)
        assert self.embedder.texts == before
        self.docs[doc_id] = (self.docs[doc_id][0], acl)

    @precondition(lambda self: bool(self.docs))
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        doc_id = data.draw(st.sampled_from(sorted(self.docs)))
        assert self.services.ingestor.delete("push", doc_id)
        del self.docs[doc_id]

    @invariant()
    def reads_match_catalog(self) -> None:
        rows = {r.doc_id: r for r in self.services.catalog.documents()}
        assert set(rows) == set(self.docs)
        total_points = sum(len(r.ids) for r in rows.values())
        assert self.services.index.size() == total_points  # no orphans, no duplicates
        for principals in CALLERS:
            scope = Scope(Entitlements("x", "iss", "acme", principals))
            expected = {pid for r in rows.values() if r.acl.visible_to(principals) for pid in r.ids}
            got = {h.id for h in self.services.search_unaudited.search(scope, "alpha beta gamma", top_k=100, mode="dense").hits}
            assert got == expected
            assert self.services.search_unaudited.count(scope) == len(expected)


IngestMachine.TestCase.settings = hsettings(max_examples=8, stateful_step_count=25, deadline=None)
TestIngestStateMachine = IngestMachine.TestCase
