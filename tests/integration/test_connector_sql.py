"""The SQL connector through the engine (``app.connectors.ConnectorSync``) against real
PostgreSQL and MariaDB: a docs table and a doc_acl join table, the real write path (Ingestor,
Edge index, SQLite catalog), the identity map from settings, the write audit.

Invariants (issue #18's done-when): an ACL row inserted or deleted is visible to the right users
after one permission run, with no embedder call, and is in the write audit's ACL history under
``connector:<source>``; an updated row re-embeds only that row; a deleted row is removed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.services import Services, build_services
from app.sources import ConnectorSpec
from auth.local import operator_entitlements
from core.settings import IdentityRule, IdentitySettings, SchedulerSettings
from core.types import Entitlements, Scope
from ingest.connectors.contract import SourceIdentity
from testkit.harness_sql import SqlHarness
from tests.api.test_push import CountingEmbedder
from tests.conftest import make_settings

NS = "sql:test"


class RecordingEmbedder(CountingEmbedder):
    """Counts and keeps every text it embeds (a search embeds its query too)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def embed(self, texts):  # type: ignore[no-untyped-def]
        self.seen.extend(texts)
        return super().embed(texts)


@pytest.fixture
def emb() -> RecordingEmbedder:
    return RecordingEmbedder()


@pytest.fixture
def services(tmp_path: Path, emb: RecordingEmbedder) -> Iterator[Services]:
    identity = IdentitySettings(rules=[
        IdentityRule(namespace=NS, kind="user", principal="user:{name}@corp.example"),
        IdentityRule(namespace=NS, kind="group", principal="group:{name}"),
    ])
    s = build_services(make_settings(tmp_path, identity=identity, scheduler=SchedulerSettings(backoff_s=0.0)), embedder=emb)
    yield s
    s.close()


@pytest.fixture(params=("postgresql", "mariadb"))
def db(request: pytest.FixtureRequest) -> Iterator[SqlHarness]:
    h = SqlHarness(request.param, acl="join", namespace=NS)
    yield h
    h.close()


def user(name: str) -> SourceIdentity:
    return SourceIdentity("user", name, NS)


def group(name: str) -> SourceIdentity:
    return SourceIdentity("group", name, NS)


def visible(services: Services, *principals: str) -> set[str]:
    scope = Scope(Entitlements("x", "i", "acme", frozenset(principals)))
    hits = services.search_unaudited.search(scope, "revenue forecast", top_k=100, mode="dense").hits
    return {h.provenance["doc_id"] for h in hits}


def test_acl_rows_and_row_changes_through_the_engine(services: Services, emb: RecordingEmbedder, db: SqlHarness) -> None:
    plan = db.add("Plan", "The revenue forecast plan.", [user("alice"), group("finance")])
    memo = db.add("Memo", "A memo on the revenue forecast.", [user("bob")])
    for i in range(4):  # more rows, so one delete stays under the mass-delete guard (20 %)
        db.add(f"Note {i}", f"Note {i} on the revenue forecast.", [group("staff")])
    services.sources.create(operator_entitlements("acme", "tester"), "crm", "connector", ["user:etl"], None, local=True,
                            connector=ConnectorSpec("sql", db.config, 3600, 60))
    sync = services.connectors
    assert sync is not None

    first = sync.run_content("crm")
    assert first.outcome == "ok" and first.counts == {"added": 6}, first.as_dict()
    assert visible(services, "user:alice@corp.example") == {plan}
    assert visible(services, "group:finance") == {plan}
    assert visible(services, "user:bob@corp.example") == {memo}
    assert len(visible(services, "group:staff")) == 4
    assert sync.run_permissions("crm").outcome == "ok"  # the permission stream's first checkpoint

    def permission_run(expected: int) -> None:
        before = emb.texts
        rep = sync.run_permissions("crm")
        assert emb.texts == before, "a permission run never calls the embedder"
        assert rep.outcome == "ok" and rep.counts.get("acl_updated", 0) == expected, rep.as_dict()

    # An ACL row inserted (bob gains the plan), one deleted (alice loses it): the docs table is untouched.
    db.exec(f"INSERT INTO {db.table('doc_acl')} (doc_id, identity, kind, effect, updated_at) "
            f"VALUES ({plan}, 'bob', 'user', 'allow', :t)", {"t": db.tick()})
    db.exec(f"DELETE FROM {db.table('doc_acl')} WHERE doc_id = {plan} AND identity = 'alice'")
    permission_run(1)
    assert visible(services, "user:bob@corp.example") == {plan, memo}
    assert visible(services, "user:alice@corp.example") == set()
    # A deny row beats the group's allow.
    db.exec(f"INSERT INTO {db.table('doc_acl')} (doc_id, identity, kind, effect, updated_at) "
            f"VALUES ({plan}, 'bob', 'user', 'deny', :t)", {"t": db.tick()})
    permission_run(1)
    assert visible(services, "user:bob@corp.example", "group:finance") == {memo}
    permission_run(0)

    history = services.write_audit.acl_history("acme", "crm", plan)
    last = history[-1]
    assert (last.subject, last.action, last.outcome) == ("connector:crm", "connector_permissions", "acl_updated")
    assert last.acl_after is not None and "user:bob@corp.example" in last.acl_after.deny

    before = list(emb.seen)
    assert sync.run_content("crm").counts == {}, "ACL rows never come from the content stream"
    assert emb.seen == before

    db.edit(memo, "A rewritten memo: the revenue forecast doubled.")
    db.remove(plan)
    rep = sync.run_content("crm")
    assert rep.outcome == "ok" and rep.counts == {"updated": 1, "deleted": 1}, rep.as_dict()
    embedded = emb.seen[len(before):]
    assert embedded and all("rewritten memo" in t for t in embedded), "only the updated row is embedded"
    assert visible(services, "group:finance") == set()
    assert visible(services, "user:bob@corp.example") == {memo}
    runs = [e["detail"]["stream"] for e in services.write_audit.events(source="crm") if e["action"] == "connector_sync"]
    assert runs.count("permissions") == 4 and runs.count("content") == 3
