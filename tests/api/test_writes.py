"""The governed write side over real HTTP (real app, Edge index, SQLite catalog, hash embedder):
per-source write authorization, sources as admin-managed objects, the write audit (ACL history,
"could P read X at T"), strict request bodies and query parameters, one principal grammar, and
metadata-only updates. Each of issue #13's reproductions is a test here that failed before."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from testkit.sources import register_source
from tests.api.ops_env import ADMIN, HTTP, INGEST, SEARCH, Env, doc_ids, running
from tests.api.test_push import CountingEmbedder


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[Env, CountingEmbedder]]:
    emb = CountingEmbedder()
    with running(tmp_path, embedder=emb) as e:
        register_source(e.services, "erp", writers=["user:etl"])
        register_source(e.services, "crm", writers=["group:crm-connectors"])
        yield e, emb


def _put(e: Env, source: str, doc_id: str, headers: dict[str, str], **body: object) -> object:
    payload = {"filename": "d.txt", "content": "Quarterly revenue forecast.", "acl": {"allow": ["group:finance"]}}
    payload.update(body)
    return HTTP.put(f"{e.url}/v1/sources/{source}/documents/{doc_id}", json=payload, headers=headers)


def _writes(e: Env, **filters: str) -> list[dict]:
    return e.services.write_audit.events(**filters)  # type: ignore[arg-type]


# -------------------------------------------------------------- per-source write authorization


def test_ingest_token_of_one_source_cannot_rewrite_another_source(env: tuple[Env, CountingEmbedder]) -> None:
    """Reproduction: a connector's ingest token for one source PATCHed another source's ACL."""
    e, _ = env
    erp_writer = e.auth("etl", scopes=[INGEST])
    crm_writer = e.auth("crm-bot", ["crm-connectors"], scopes=[INGEST])
    assert _put(e, "erp", "board-pack", erp_writer).status_code == 200
    r = HTTP.patch(f"{e.url}/v1/sources/erp/documents/board-pack/acl", json={"allow": ["tenant:acme"]},
                   headers=crm_writer)
    assert r.status_code == 403 and r.json()["error"]["code"] == "source_forbidden"
    assert doc_ids(e.search(e.auth("erin"), "revenue forecast")) == set(), "the PATCH must not have applied"
    for r in (_put(e, "erp", "x", crm_writer), HTTP.delete(f"{e.url}/v1/sources/erp/documents/board-pack",
                                                           headers=crm_writer)):
        assert r.status_code == 403 and r.json()["error"]["code"] == "source_forbidden"
    # A writer of crm (through its group) writes crm; an admin who is no writer does not.
    assert _put(e, "crm", "acct-1", crm_writer).status_code == 200
    r = _put(e, "crm", "acct-2", e.auth("root", scopes=[ADMIN]))
    assert r.status_code == 403 and r.json()["error"]["code"] == "source_forbidden"


def test_writes_to_an_unknown_source_are_refused_never_created(env: tuple[Env, CountingEmbedder]) -> None:
    e, _ = env
    r = _put(e, "nowhere", "x", e.auth("etl", scopes=[INGEST]))
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_source"
    assert e.services.sources.get("nowhere") is None and e.services.catalog.document_counts() == {}


def test_documents_go_to_push_sources_folders_to_filesystem_sources(env: tuple[Env, CountingEmbedder],
                                                                    tmp_path: Path) -> None:
    e, _ = env
    folder = tmp_path / "share"
    folder.mkdir()
    register_source(e.services, "share", kind="filesystem", root=folder)
    etl = e.auth("etl", scopes=[INGEST])
    r = _put(e, "share", "a.txt", etl)
    assert r.status_code == 409 and r.json()["error"]["code"] == "source_kind_mismatch"
    r = HTTP.post(f"{e.url}/v1/ingest/jobs", json={"path": str(folder), "source": "erp"}, headers=etl)
    assert r.status_code == 409 and r.json()["error"]["code"] == "source_kind_mismatch"


def test_sources_are_created_and_deleted_by_admins(env: tuple[Env, CountingEmbedder]) -> None:
    e, _ = env
    admin, etl = e.auth("root", scopes=[ADMIN]), e.auth("etl", scopes=[INGEST])
    body = {"name": "wiki", "kind": "push", "writers": ["user:wiki-bot"]}
    r = HTTP.post(f"{e.url}/v1/admin/sources", json=body, headers=etl)
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"
    r = HTTP.post(f"{e.url}/v1/admin/sources", json=body, headers=admin)
    assert r.status_code == 201 and r.json()["writers"] == ["user:wiki-bot"] and r.json()["kind"] == "push"
    assert HTTP.post(f"{e.url}/v1/admin/sources", json=body, headers=admin).json()["error"]["code"] == "source_exists"
    bad = HTTP.post(f"{e.url}/v1/admin/sources", json={**body, "name": "w2", "writers": ["group:*"]}, headers=admin)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_principal"
    shown = HTTP.get(f"{e.url}/v1/admin/sources/wiki", headers=admin).json()
    assert shown["registered"] and shown["created_by"].endswith("root")

    bot = e.auth("wiki-bot", scopes=[INGEST])
    assert _put(e, "wiki", "p1", bot).status_code == 200 and _put(e, "wiki", "p2", bot).status_code == 200
    r = HTTP.patch(f"{e.url}/v1/admin/sources/wiki", json={"writers": ["user:etl"]}, headers=admin)
    assert r.status_code == 200 and r.json()["writers"] == ["user:etl"]
    assert _put(e, "wiki", "p3", bot).json()["error"]["code"] == "source_forbidden"

    assert HTTP.delete(f"{e.url}/v1/admin/sources/wiki", headers=etl).status_code == 403
    r = HTTP.delete(f"{e.url}/v1/admin/sources/wiki", headers=admin)
    assert r.status_code == 200 and r.json() == {"source": "wiki", "deleted_documents": 2}
    assert e.services.sources.get("wiki") is None and "wiki" not in e.services.catalog.document_counts()
    assert _put(e, "wiki", "p4", e.auth("etl", scopes=[INGEST])).json()["error"]["code"] == "unknown_source"
    assert HTTP.delete(f"{e.url}/v1/admin/sources/wiki", headers=admin).json()["error"]["code"] == "unknown_source"
    actions = [(w["action"], w["outcome"]) for w in _writes(e, source="wiki")]
    assert ("source_create", "created") in actions and ("source_update", "updated") in actions
    assert ("source_delete", "deleted") in actions and actions.count(("source_delete", "refused")) == 1


def test_callers_of_another_tenant_are_refused_and_audited(tmp_path: Path) -> None:
    from core.settings import AuthSettings

    with running(tmp_path, auth=AuthSettings(dev_tenant="globex")) as e:
        register_source(e.services, "erp")
        r = _put(e, "erp", "x", e.auth("etl", scopes=[INGEST]))
        assert r.status_code == 403 and r.json()["error"]["code"] == "wrong_tenant"
        [ev] = _writes(e, source="erp")[-1:]
        assert ev["outcome"] == "refused" and ev["code"] == "wrong_tenant" and ev["detail"]["caller_tenant"] == "globex"


# ------------------------------------------------------------------------------- write audit


def test_every_write_and_refusal_is_audited_with_acl_and_content_before_and_after(
        env: tuple[Env, CountingEmbedder]) -> None:
    e, _ = env
    etl = e.auth("etl", scopes=[INGEST])
    url = f"{e.url}/v1/sources/erp/documents/q3"
    r1 = _put(e, "erp", "q3", etl)
    r2 = _put(e, "erp", "q3", etl)  # same content, same ACL, no date: unchanged
    r3 = HTTP.patch(url + "/acl", json={"allow": ["group:hr"], "deny": ["user:mallory"]}, headers=etl)
    r4 = _put(e, "erp", "q3", e.auth("alice", ["finance"], scopes=[SEARCH]))  # refused: no ingest scope
    r5 = HTTP.delete(url, headers=etl)
    assert [r.status_code for r in (r1, r2, r3, r4, r5)] == [200, 200, 200, 403, 204]
    events = []
    for r in (r1, r2, r3, r4, r5):
        evs = _writes(e, request_id=r.headers["x-request-id"])
        assert len(evs) == 1, evs  # exactly once, stored before the answer
        events.append(evs[0])
    added, unchanged, patched, refused, deleted = events
    assert added["outcome"] == "added" and added["subject"] == "etl" and added["acl_before"] is None
    assert added["acl_after"] == {"allow": ["group:finance"], "deny": []} and added["content_after"]
    assert unchanged["outcome"] == "unchanged"
    assert patched["action"] == "patch_acl" and patched["acl_before"] == added["acl_after"]
    assert patched["acl_after"] == {"allow": ["group:hr"], "deny": ["user:mallory"]}
    assert patched["acl_before_fp"] != patched["acl_after_fp"] and patched["content_before"] == patched["content_after"]
    assert refused["outcome"] == "refused" and refused["code"] == "insufficient_scope" and refused["status"] == 403
    assert refused["subject"] == "alice" and refused["principals_hash"]
    assert deleted["outcome"] == "deleted" and deleted["acl_after"] is None and deleted["content_after"] is None

    admin = e.auth("root", scopes=[ADMIN])
    history = HTTP.get(f"{e.url}/v1/admin/documents/erp/q3/acl-history", headers=admin).json()["changes"]
    assert [h["outcome"] for h in history] == ["added", "acl_updated", "deleted"]
    assert {h["subject"] for h in history} == {"etl"}


def test_what_could_a_principal_read_at_time_t(env: tuple[Env, CountingEmbedder]) -> None:
    e, _ = env
    etl, admin = e.auth("etl", scopes=[INGEST]), e.auth("root", scopes=[ADMIN])
    before = datetime.now(UTC)
    _put(e, "erp", "q3", etl)
    t1 = datetime.now(UTC)
    HTTP.patch(f"{e.url}/v1/sources/erp/documents/q3/acl", json={"allow": ["group:hr"]}, headers=etl)
    t2 = datetime.now(UTC)

    def could(at: datetime, *principals: str) -> dict:
        r = HTTP.get(f"{e.url}/v1/admin/documents/erp/q3/access", headers=admin,
                     params=[("principal", p) for p in principals] + [("at", at.isoformat())])
        assert r.status_code == 200, r.text
        return dict(r.json())

    assert could(before - timedelta(seconds=1), "group:finance") | {"readable": False, "existed": False} == \
        could(before - timedelta(seconds=1), "group:finance")
    at_t1 = could(t1, "user:alice", "group:finance", "tenant:acme")
    assert at_t1["readable"] and at_t1["granted_by"] == ["group:finance"] and at_t1["since"]["outcome"] == "added"
    assert not could(t1, "group:hr")["readable"]
    assert not could(t2, "group:finance")["readable"] and could(t2, "group:hr")["readable"]
    bad = HTTP.get(f"{e.url}/v1/admin/documents/erp/q3/access", headers=admin,
                   params={"principal": "group:*", "at": t2.isoformat()})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_principal"


# -------------------------------------------------------------------------- strict requests


def test_unknown_body_fields_and_query_parameters_are_refused(env: tuple[Env, CountingEmbedder]) -> None:
    """Reproductions: {"topk": 3} gave 10 hits; a PATCH in PUT shape emptied the ACL."""
    e, _ = env
    etl, alice = e.auth("etl", scopes=[INGEST]), e.auth("alice", ["finance"])
    assert _put(e, "erp", "q3", etl).status_code == 200
    r = HTTP.post(f"{e.url}/v1/search", json={"query": "travel", "topk": 3}, headers=alice)
    assert r.status_code == 422 and "topk" in r.json()["error"]["message"]
    r = HTTP.patch(f"{e.url}/v1/sources/erp/documents/q3/acl", json={"acl": {"allow": ["group:hr"]}}, headers=etl)
    assert r.status_code == 422 and "acl" in r.json()["error"]["message"]
    assert e.services.catalog.get("acme/erp/q3").acl.allow == {"group:finance"}  # type: ignore[union-attr]
    r = _put(e, "erp", "q4", etl, acl={"allow": ["group:finance"], "dney": ["user:alice"]})
    assert r.status_code == 422 and "dney" in r.json()["error"]["message"]
    admin = e.auth("root", scopes=[ADMIN])
    r = HTTP.get(f"{e.url}/v1/admin/jobs", params={"limt": 5}, headers=admin)
    assert r.status_code == 422 and "limt" in r.json()["error"]["message"]
    assert HTTP.get(f"{e.url}/v1/admin/jobs", params={"limit": 5}, headers=admin).status_code == 200
    assert HTTP.get(f"{e.url}/v1/chunks/count", params={"x": 1}, headers=alice).status_code == 422
    assert HTTP.get(f"{e.url}/v1/chunks/count", params={"x": 1}).status_code == 401  # authentication first


@pytest.mark.parametrize("principal", ["group:fin\u0000", "group:*", "user:a:b", "Group:finance", "group: finance",
                                       "group:finance ", "finance", "group:", "group:" + "x" * 257, "group:a\u200b"])
def test_push_refuses_principals_outside_the_grammar(env: tuple[Env, CountingEmbedder], principal: str) -> None:
    e, _ = env
    etl = e.auth("etl", scopes=[INGEST])
    r = _put(e, "erp", "q3", etl, acl={"allow": [principal]})
    assert r.status_code == 422, (principal, r.text)
    assert _put(e, "erp", "q3", etl, acl={"allow": ["group:finance"]}).status_code == 200
    r = HTTP.patch(f"{e.url}/v1/sources/erp/documents/q3/acl", json={"allow": ["tenant:acme"], "deny": [principal]},
                   headers=etl)
    assert r.status_code == 422, (principal, r.text)


# ---------------------------------------------------------------------- metadata-only updates


def test_same_content_with_new_date_title_uri_or_metadata_is_a_payload_update(
        env: tuple[Env, CountingEmbedder]) -> None:
    """Reproduction: a re-push with a new modified_at answered unchanged and kept the old date."""
    e, emb = env
    etl, alice = e.auth("etl", scopes=[INGEST]), e.auth("alice", ["finance"])
    old, new = "2020-01-01T00:00:00+00:00", "2026-06-01T00:00:00+00:00"
    long = "\n\n".join(f"Section {i}. " + "revenue forecast budget planning " * 40 for i in range(4))
    r = _put(e, "erp", "q3", etl, content=long, modified_at=old, title="Q3")
    assert r.json()["outcome"] == "added"
    chunks = r.json()["chunks"]
    assert chunks > 1
    embedded = emb.texts
    r = _put(e, "erp", "q3", etl, content=long, modified_at=old, title="Q3")
    assert r.json() == {"source": "erp", "doc_id": "q3", "outcome": "unchanged", "chunks": chunks}
    r = _put(e, "erp", "q3", etl, content=long, modified_at=new, title="Q3 final", uri="https://erp/q3",
             metadata={"owner": "kim"})
    assert r.json() == {"source": "erp", "doc_id": "q3", "outcome": "metadata_updated", "chunks": chunks}
    assert emb.texts == embedded, "a metadata-only update must not embed"
    cutoff = {"modified_after": "2025-01-01T00:00:00Z"}
    hits = e.search(alice, "revenue forecast", **cutoff).json()["hits"]
    assert hits and all(h["provenance"]["modified_at"].startswith("2026-06-01") for h in hits)
    assert {h["provenance"]["title"] for h in hits} == {"Q3 final"} and {h["provenance"]["uri"] for h in hits} == \
        {"https://erp/q3"}
    row = e.services.catalog.get("acme/erp/q3")
    assert row is not None and row.metadata_dict == {"owner": "kim"} and row.title == "Q3 final"
    r = HTTP.patch(f"{e.url}/v1/sources/erp/documents/q3/acl", json={"allow": ["group:hr"]}, headers=etl)
    assert r.status_code == 200
    embedded = emb.texts  # (the searches above embedded their queries)
    r = _put(e, "erp", "q3", etl, content=long, modified_at=new, title="Q3 final", uri="https://erp/q3",
             metadata={"owner": "kim"}, acl={"allow": ["group:finance"]})
    assert r.json()["outcome"] == "acl_updated" and r.json()["chunks"] == chunks and emb.texts == embedded
    [ev] = _writes(e, request_id=r.headers["x-request-id"])
    assert ev["acl_before"]["allow"] == ["group:hr"] and ev["acl_after"]["allow"] == ["group:finance"]
    metas = [w for w in _writes(e, source="erp") if w["outcome"] == "metadata_updated"]
    assert len(metas) == 1 and set(metas[0]["detail"]["fields"]) == {"modified_at", "title", "uri", "metadata"}


def test_write_audit_export_cli(env: tuple[Env, CountingEmbedder], monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    e, _ = env
    _put(e, "erp", "q3", e.auth("etl", scopes=[INGEST]))
    monkeypatch.setenv("CLEARANCE_STORAGE__DATA_DIR", str(e.settings.storage.data_dir))
    res = CliRunner().invoke(app, ["audit", "export", "--kind", "write"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    assert [(x["action"], x["outcome"]) for x in lines][-1] == ("put", "added")
    assert {x["kind"] for x in lines} == {"write"} and lines[0]["action"] == "source_create"
