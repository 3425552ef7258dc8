"""The audit trail: every field of an event, on SQLite and PostgreSQL (a schema per test);
retention; "who saw document X since T" in the store and through the admin API; reads over
real HTTP are audited with the request id, identity, hashes, chunk versions and the ACL
version the engine filtered with; JSONL export from the CLI."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from core.audit import AuditEvent, SeenChunk, acl_fingerprint, acl_version
from core.settings import AuditSettings
from store.audit import AuditLog
from store.catalog import Catalog
from tests.api.ops_env import ADMIN, HTTP, INGEST, Env, running
from tests.contract.test_catalog import catalog  # noqa: F401  (fixture: SQLite and PostgreSQL)

# Recent enough to survive the default retention whenever the suite runs.
T0 = (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=0)
ALICE = frozenset({"user:alice", "group:finance", "tenant:acme"})


def event(at: datetime = T0, subject: str = "alice", chunks: tuple[SeenChunk, ...] = (), **kw: object) -> AuditEvent:
    base: dict[str, object] = dict(
        at=at, request_id=f"req-{subject}-{at.timestamp():.0f}", action="search", status=200,
        issuer="https://idp.example/", subject=subject, tenant="acme", principals=ALICE,
        query="  Q3 revenue forecast ", params={"mode": "hybrid", "top_k": 10}, chunks=chunks, latency_ms=4.25,
    )
    base.update(kw)
    return AuditEvent(**base)  # type: ignore[arg-type]


def chunk(cid: str, doc: str = "reports/q3.md", source: str = "erp", version: str = "v1",
          allow: tuple[str, ...] = ("group:finance",)) -> SeenChunk:
    return SeenChunk(cid, source, doc, version, acl_fingerprint(allow, ()))


def settings(**kw: object) -> AuditSettings:
    return AuditSettings(query_salt=SecretStr("pepper"), **kw)  # type: ignore[arg-type]


# -- the store, on both databases --------------------------------------------------------------


def test_every_field_roundtrips(catalog: Catalog) -> None:  # noqa: F811
    log = AuditLog(settings(), catalog)
    chunks = (chunk("c1"), chunk("c2"), chunk("c9", doc="hr/policy.md", version="v7", allow=("tenant:acme",)))
    ev = event(chunks=chunks, degraded=True, stale_sources=("erp",))
    assert log.record(ev) is not None
    [out] = list(log.export())
    assert datetime.fromisoformat(out["at"]) == T0
    assert out["request_id"] == f"req-alice-{T0.timestamp():.0f}" and out["action"] == "search" and out["status"] == 200
    assert (out["issuer"], out["subject"], out["tenant"]) == ("https://idp.example/", "alice", "acme")
    assert out["principals_hash"] == hashlib.sha256(b"group:finance\ntenant:acme\nuser:alice").hexdigest()
    # HMAC-SHA-256 over the stripped query, keyed with the deployment salt; no raw text by default
    assert out["query_hash"] == hmac.new(b"pepper", b"Q3 revenue forecast", hashlib.sha256).hexdigest()
    assert out["query"] is None
    assert out["params"] == {"mode": "hybrid", "top_k": 10}
    assert [(c["id"], c["doc_id"], c["version"]) for c in out["chunks"]] == [
        ("c1", "reports/q3.md", "v1"), ("c2", "reports/q3.md", "v1"), ("c9", "hr/policy.md", "v7")]
    fin = hashlib.sha256(b'{"allow":["group:finance"],"deny":[]}').hexdigest()[:16]
    assert out["chunks"][0]["acl"] == fin
    lines = sorted([f"c1:{fin}", f"c2:{fin}", f"c9:{acl_fingerprint(['tenant:acme'], [])}"])
    assert out["acl_version"] == hashlib.sha256("\n".join(lines).encode()).hexdigest()[:32] == acl_version(chunks)
    assert out["latency_ms"] == 4.25 and out["degraded"] is True and out["stale_sources"] == ["erp"]


def test_no_chunks_means_no_acl_version(catalog: Catalog) -> None:  # noqa: F811
    log = AuditLog(settings(), catalog)
    log.record(event(status=404, action="document", query=None, params={"source": "erp", "doc_id": "x"}))
    [out] = list(log.export())
    assert out["acl_version"] is None and out["chunks"] == [] and out["query_hash"] is None and out["status"] == 404


def test_raw_query_is_kept_only_when_enabled(catalog: Catalog) -> None:  # noqa: F811
    AuditLog(settings(store_raw_query=True), catalog).record(event())
    [out] = list(AuditLog(settings(), catalog).export())
    assert out["query"] == "Q3 revenue forecast" and out["query_hash"]


def test_generated_salt_is_stored_once_and_shared(catalog: Catalog) -> None:  # noqa: F811
    a, b = AuditLog(AuditSettings(), catalog), AuditLog(AuditSettings(), catalog)
    assert a.hash_query("board pack") == b.hash_query("board pack")
    assert a.hash_query("board pack") != AuditLog(settings(), catalog).hash_query("board pack")
    assert a.hash_query("board pack") != hashlib.sha256(b"board pack").hexdigest()  # keyed, not bare


def test_retention_prunes_at_startup_and_on_write(catalog: Catalog) -> None:  # noqa: F811
    now = datetime.now(UTC)
    keep = AuditLog(settings(retention_days=30, prune_interval_s=3600), catalog)
    keep.record(event(at=now - timedelta(days=45), subject="old", chunks=(chunk("c1"),)))
    keep.record(event(at=now - timedelta(days=1), subject="recent", chunks=(chunk("c1"),)))
    assert {e["subject"] for e in keep.export()} == {"old", "recent"}  # the interval has not passed
    AuditLog(settings(retention_days=30), catalog)  # a new process prunes at startup
    assert {e["subject"] for e in keep.export()} == {"recent"}
    assert [r.subject for r in keep.document_reads("acme", "erp", "reports/q3.md")] == ["recent"]
    eager = AuditLog(settings(retention_days=30, prune_interval_s=0), catalog)
    eager.record(event(at=now - timedelta(days=60), subject="late-arrival"))
    assert {e["subject"] for e in eager.export()} == {"recent"}  # pruned on write


def test_who_saw_a_document_since(catalog: Catalog) -> None:  # noqa: F811
    log = AuditLog(settings(), catalog)
    log.record(event(at=T0, subject="alice", chunks=(chunk("c1"), chunk("c2"))))
    log.record(event(at=T0 + timedelta(hours=1), subject="bob", action="document", query=None,
                     chunks=(chunk("c1", version="v2"),)))
    log.record(event(at=T0 + timedelta(hours=2), subject="carol", chunks=(chunk("c5", doc="other.md"),)))
    log.record(event(at=T0 + timedelta(hours=3), subject="mallory", tenant="globex", chunks=(chunk("c1"),)))
    reads = log.document_reads("acme", "erp", "reports/q3.md")
    assert [(r.subject, r.action, r.version, r.chunks) for r in reads] == [("alice", "search", "v1", 2),
                                                                          ("bob", "document", "v2", 1)]
    assert reads[0].acl == acl_fingerprint(["group:finance"], [])
    since = log.document_reads("acme", "erp", "reports/q3.md", since=T0 + timedelta(minutes=30))
    assert [r.subject for r in since] == ["bob"]
    assert log.document_reads("acme", "erp", "nobody-read-this.md") == []


def test_export_pages_in_order_and_filters_by_time(catalog: Catalog) -> None:  # noqa: F811
    log = AuditLog(settings(), catalog)
    for i in range(5):
        log.record(event(at=T0 + timedelta(minutes=i), subject=f"u{i}"))
    assert [e["subject"] for e in log.export(batch=2)] == ["u0", "u1", "u2", "u3", "u4"]
    assert [e["subject"] for e in log.export(since=T0 + timedelta(minutes=2), until=T0 + timedelta(minutes=4))] == \
        ["u2", "u3"]


# -- reads over HTTP ---------------------------------------------------------------------------


def _setup(env: Env) -> None:
    env.push("erp", "reports/q3", "Quarterly revenue forecast for Q3 with EBITDA.", ["group:finance"])
    env.push("erp", "company/handbook", "Company handbook: revenue and travel rules.", ["tenant:acme"])
    env.push("hr", "cases/case-7", "Confidential HR case about revenue bonus.", ["group:hr"])


def _events(env: Env) -> list[dict]:
    return list(env.services.audit.export())


def test_search_and_document_reads_are_audited(tmp_path: Path) -> None:
    with running(tmp_path) as env:
        _setup(env)
        alice = env.auth("alice", ["finance"])
        before = datetime.now(UTC)
        r = HTTP.post(f"{env.url}/v1/search", json={"query": "revenue forecast", "top_k": 10},
                      headers={**alice, "x-request-id": "req-audit-1"})
        assert r.status_code == 200 and r.headers["x-request-id"] == "req-audit-1"
        hits = r.json()["hits"]
        assert {h["provenance"]["doc_id"] for h in hits} == {"reports/q3", "company/handbook"}
        [ev] = [e for e in _events(env) if e["request_id"] == "req-audit-1"]
        assert before <= datetime.fromisoformat(ev["at"]) <= datetime.now(UTC)
        assert ev["action"] == "search" and ev["status"] == 200
        assert ev["issuer"] == env.settings.auth.dev_issuer and ev["subject"] == "alice" and ev["tenant"] == "acme"
        who = HTTP.get(f"{env.url}/v1/whoami", headers=alice).json()
        assert ev["principals_hash"] == hashlib.sha256("\n".join(sorted(who["principals"])).encode()).hexdigest()
        assert ev["query_hash"] == env.services.audit.hash_query("revenue forecast") and ev["query"] is None
        assert [(c["id"], c["version"]) for c in ev["chunks"]] == [(h["id"], h["provenance"]["version"]) for h in hits]
        # The ACL version is recomputable from the catalog's ACL of each returned document.
        seen = []
        for h in hits:
            row = env.services.catalog.get(f"acme/erp/{h['provenance']['doc_id']}")
            assert row is not None
            seen.append(SeenChunk(h["id"], "erp", row.doc_id, row.version, acl_fingerprint(row.acl.allow, row.acl.deny)))
        assert ev["acl_version"] == acl_version(seen)
        assert ev["latency_ms"] > 0 and ev["degraded"] is False and ev["stale_sources"] == []
        assert ev["params"]["mode"] == "hybrid" and ev["params"]["top_k"] == 10

        r = HTTP.get(f"{env.url}/v1/documents/erp/reports/q3", headers=alice)
        assert r.status_code == 200
        doc = next(e for e in _events(env) if e["request_id"] == r.headers["x-request-id"])
        assert doc["action"] == "document" and doc["query_hash"] is None
        assert [c["id"] for c in doc["chunks"]] == [c["id"] for c in r.json()["chunks"]]

        r = HTTP.get(f"{env.url}/v1/documents/hr/cases/case-7", headers=alice)  # hidden: 404, still audited
        assert r.status_code == 404
        hidden = next(e for e in _events(env) if e["request_id"] == r.headers["x-request-id"])
        assert hidden["status"] == 404 and hidden["chunks"] == [] and hidden["params"]["error"] == "not_found"


def test_acl_version_follows_the_acl_in_force(tmp_path: Path) -> None:
    with running(tmp_path) as env:
        env.push("erp", "reports/q3", "Quarterly revenue forecast.", ["group:finance"])
        alice = env.auth("alice", ["finance"])
        first = env.search(alice, "revenue forecast")
        r = HTTP.patch(f"{env.url}/v1/sources/erp/documents/reports/q3/acl", json={"allow": ["group:finance", "group:exec"]},
                       headers=env.auth("etl", scopes=[INGEST]))
        assert r.status_code == 200
        second = env.search(alice, "revenue forecast")
        v1, v2 = (next(e for e in _events(env) if e["request_id"] == x.headers["x-request-id"])["acl_version"]
                  for x in (first, second))
        assert v1 and v2 and v1 != v2
        cid = second.json()["hits"][0]["id"]
        assert v2 == acl_version([SeenChunk(cid, "erp", "reports/q3", "", acl_fingerprint(["group:exec", "group:finance"], []))])


def test_admin_asks_who_saw_a_document(tmp_path: Path) -> None:
    with running(tmp_path) as env:
        _setup(env)
        env.search(env.auth("alice", ["finance"]), "revenue forecast")
        time.sleep(0.01)
        cut = datetime.now(UTC)
        assert HTTP.get(f"{env.url}/v1/documents/erp/reports/q3", headers=env.auth("bob", ["finance"])).status_code == 200
        env.search(env.auth("erin", []), "revenue forecast")  # sees only the handbook
        admin = env.auth("root", scopes=[ADMIN])
        url = f"{env.url}/v1/admin/audit/documents/erp/reports/q3"
        body = HTTP.get(url, headers=admin).json()
        assert [s["subject"] for s in body["subjects"]] == ["alice", "bob"]
        assert [(r["subject"], r["action"]) for r in body["reads"]] == [("alice", "search"), ("bob", "document")]
        assert all(r["version"] and r["acl"] and r["request_id"] for r in body["reads"])
        since = HTTP.get(url, params={"since": cut.isoformat()}, headers=admin).json()
        assert [r["subject"] for r in since["reads"]] == ["bob"]
        assert HTTP.get(url, headers=env.auth("alice", ["finance"], scopes=["clearance:search"])).status_code == 403
        assert HTTP.get(url).status_code == 401


def test_cli_exports_jsonl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cli.main import app

    with running(tmp_path) as env:
        _setup(env)
        env.search(env.auth("alice", ["finance"]), "revenue")
        time.sleep(0.01)
        cut = datetime.now(UTC)
        env.search(env.auth("bob", ["hr"]), "revenue bonus")
        HTTP.get(f"{env.url}/v1/documents/hr/cases/case-7", headers=env.auth("bob", ["hr"]))
        monkeypatch.setenv("CLEARANCE_STORAGE__DATA_DIR", str(tmp_path / "var"))
        out = tmp_path / "audit.jsonl"
        res = CliRunner().invoke(app, ["audit", "export", "--since", cut.isoformat(), "--out", str(out)])
        assert res.exit_code == 0, res.output
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        assert [(e["subject"], e["action"]) for e in lines] == [("bob", "search"), ("bob", "document")]
        everything = CliRunner().invoke(app, ["audit", "export"])
        assert everything.exit_code == 0 and len(everything.stdout.splitlines()) == 3
        hashed = CliRunner().invoke(app, ["audit", "hash-query", "revenue bonus"])
        assert hashed.stdout.strip() == lines[0]["query_hash"]
        bad = CliRunner().invoke(app, ["audit", "export", "--since", "yesterday"])
        assert bad.exit_code == 2
