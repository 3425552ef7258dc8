"""The push API through real HTTP: idempotent PUT, ACL-only PATCH without re-embedding,
DELETE, fail-closed missing ACLs, data contracts and scope checks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from app.services import Services, build_services
from core.settings import IngestSettings, SourceContract
from retrieval.embedder import HashEmbedder
from testkit.sources import register_sources
from tests.conftest import LiveServer, make_settings

HTTP = httpx.Client(timeout=60)  # the first parse in a process loads spaCy and the parsers
LONG = "\n\n".join(f"Section {i}. " + " ".join(f"revenue{i} forecast budget planning" for _ in range(60)) for i in range(6))


class CountingEmbedder(HashEmbedder):
    def __init__(self) -> None:
        super().__init__(64)
        self.texts = 0

    def embed(self, texts):  # type: ignore[no-untyped-def]
        self.texts += len(texts)
        return super().embed(texts)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[Services, LiveServer, CountingEmbedder]]:
    contracts = {"crm": SourceContract(required=["owner"], types={"owner": "str"}, allowed={"region": ["emea", "amer"]})}
    settings = make_settings(tmp_path, ingest=IngestSettings(contracts=contracts))
    emb = CountingEmbedder()
    services = build_services(settings, embedder=emb)
    register_sources(services, ["erp", "crm"])  # writers: user:etl, the subject the tests push with
    with LiveServer(create_app(settings, services)) as server:
        yield services, server, emb
    services.close()


def auth(services: Services, sub: str, groups: list[str], scopes: list[str]) -> dict[str, str]:
    assert services.auth.dev is not None
    return {"authorization": f"Bearer {services.auth.dev.mint(sub, groups=groups, scopes=scopes)}"}


def visible_docs(server: LiveServer, headers: dict[str, str], query: str = "revenue forecast") -> set[str]:
    r = HTTP.post(f"{server.url}/v1/search", json={"query": query, "top_k": 100, "mode": "dense"}, headers=headers)
    assert r.status_code == 200, r.text
    return {h["provenance"]["doc_id"] for h in r.json()["hits"]}


def test_put_patch_delete_lifecycle(env: tuple[Services, LiveServer, CountingEmbedder]) -> None:
    services, server, emb = env
    svc = auth(services, "etl", [], ["clearance:ingest"])
    fin = auth(services, "alice", ["finance"], ["clearance:search"])
    hr = auth(services, "bob", ["hr"], ["clearance:search"])
    url = f"{server.url}/v1/sources/erp/documents/reports/q3.md"
    body = {"filename": "q3.md", "content": LONG, "acl": {"allow": ["group:finance"]}}

    r = HTTP.put(url, json=body, headers=svc)
    assert r.status_code == 200 and r.json()["outcome"] == "added"
    chunks_v1 = r.json()["chunks"]
    assert chunks_v1 > 1
    assert visible_docs(server, fin) == {"reports/q3.md"} and visible_docs(server, hr) == set()

    assert HTTP.put(url, json=body, headers=svc).json()["outcome"] == "unchanged"

    embedded = emb.texts
    r = HTTP.patch(url + "/acl", json={"allow": ["group:hr"]}, headers=svc)
    assert r.status_code == 200 and emb.texts == embedded, "ACL-only change must not embed"
    assert visible_docs(server, hr) == {"reports/q3.md"} and visible_docs(server, fin) == set()

    r = HTTP.put(url, json={**body, "content": "Short revenue forecast.", "acl": {"allow": ["group:hr"]}}, headers=svc)
    assert r.json()["outcome"] == "updated" and r.json()["chunks"] == 1
    assert services.index.size() == 1, "leftover chunks from the longer version must be gone"

    assert HTTP.delete(url, headers=svc).status_code == 204
    assert visible_docs(server, hr) == set() and services.index.size() == 0
    assert HTTP.delete(url, headers=svc).status_code == 404
    assert HTTP.patch(url + "/acl", json={"allow": []}, headers=svc).status_code == 404


def test_document_without_acl_is_private(env: tuple[Services, LiveServer, CountingEmbedder]) -> None:
    services, server, _ = env
    svc = auth(services, "etl", [], ["clearance:ingest"])
    r = HTTP.put(f"{server.url}/v1/sources/erp/documents/x", json={"filename": "x.txt", "content": "revenue forecast"}, headers=svc)
    assert r.json()["outcome"] == "added" and services.index.size() == 1
    for groups in ([], ["finance"], ["hr"]):
        assert visible_docs(server, auth(services, "u", groups, ["clearance:search"])) == set()


def test_contract_violations_are_rejected_per_document(env: tuple[Services, LiveServer, CountingEmbedder]) -> None:
    services, server, _ = env
    svc = auth(services, "etl", [], ["clearance:ingest"])
    url = f"{server.url}/v1/sources/crm/documents/acct-1"
    base = {"filename": "a.txt", "content": "account notes", "acl": {"allow": ["tenant:acme"]}}
    for meta in ({}, {"owner": 7}, {"owner": "kim", "region": "mars"}):
        r = HTTP.put(url, json={**base, "metadata": meta}, headers=svc)
        assert r.status_code == 422 and r.json()["error"]["code"] == "contract_violation"
    assert services.index.size() == 0
    ok = HTTP.put(url, json={**base, "metadata": {"owner": "kim", "region": "emea"}}, headers=svc)
    assert ok.status_code == 200


def test_bad_input_gets_clear_codes(env: tuple[Services, LiveServer, CountingEmbedder]) -> None:
    services, server, _ = env
    svc = auth(services, "etl", [], ["clearance:ingest"])
    url = f"{server.url}/v1/sources/erp/documents/bad"
    cases = [
        ({"filename": "a.txt", "content": "   "}, "empty_file"),
        ({"filename": "a.exe", "content": "hello"}, "unsupported_type"),
        ({"filename": "a.txt", "content_base64": "@@@"}, "invalid_request"),
        ({"filename": "a.txt", "content": "x", "acl": {"allow": ["finance"]}}, "invalid_acl"),
        ({"filename": "a.txt"}, "invalid_request"),
    ]
    for body, code in cases:
        r = HTTP.put(url, json=body, headers=svc)
        assert r.status_code == 422 and r.json()["error"]["code"] == code, (body, r.text)


def test_push_needs_the_ingest_scope(env: tuple[Services, LiveServer, CountingEmbedder]) -> None:
    services, server, _ = env
    user = auth(services, "alice", ["finance"], ["clearance:search"])
    r = HTTP.put(f"{server.url}/v1/sources/erp/documents/x", json={"filename": "x.txt", "content": "hi"}, headers=user)
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"
    assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
    r = HTTP.put(f"{server.url}/v1/sources/erp/documents/x", json={"filename": "x.txt", "content": "hi"})
    assert r.status_code == 401


def test_callers_of_another_tenant_cannot_write_or_administer(tmp_path: Path) -> None:
    # The dev issuer's tokens name tenant globex; this deployment writes into acme.
    from core.settings import AuthSettings

    settings = make_settings(tmp_path, auth=AuthSettings(dev_tenant="globex"), ingest=IngestSettings(tenant="acme"))
    services = build_services(settings, embedder=HashEmbedder(64))
    with LiveServer(create_app(settings, services)) as server:
        admin = auth(services, "root", [], ["clearance:admin"])
        r = HTTP.put(f"{server.url}/v1/sources/erp/documents/x",
                     json={"filename": "x.txt", "content": "hi", "acl": {"allow": ["group:all"]}}, headers=admin)
        assert r.status_code == 403 and r.json()["error"]["code"] == "wrong_tenant"
        r = HTTP.patch(f"{server.url}/v1/sources/erp/documents/x/acl", json={"allow": ["group:all"]}, headers=admin)
        assert r.status_code == 403 and r.json()["error"]["code"] == "wrong_tenant"
        r = HTTP.get(f"{server.url}/v1/admin/sources", headers=admin)
        assert r.status_code == 403 and r.json()["error"]["code"] == "wrong_tenant"
        assert services.catalog.document_counts() == {}  # nothing was written
    services.close()
