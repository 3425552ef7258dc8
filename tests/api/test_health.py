"""Liveness, readiness and freshness over real HTTP: ready in dev mode; 503 with details and
Retry-After when the index, the catalog or the issuer's keys are unavailable; a source beyond
its freshness SLA is a warning in /readyz (still 200), a gauge in /metrics and
``stale_sources`` in every search answer that holds its chunks."""

from __future__ import annotations

import time
from pathlib import Path

from core.settings import AuthSettings, IngestSettings, IssuerSettings
from testkit.oidc.harness import JwksServer, jwks, rsa_key
from testkit.sources import register_source
from tests.api.ops_env import HTTP, INGEST, break_sqlite_catalog, doc_ids, repair_sqlite_catalog, running, sample


def test_ready_in_dev_mode(tmp_path: Path) -> None:
    with running(tmp_path) as env:
        env.push("erp", "a", "revenue", ["tenant:acme"])
        r = HTTP.get(f"{env.url}/readyz")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "ready" and body["warnings"] == [] and body["stale_sources"] == []
        checks = body["checks"]
        assert checks["index"] == {**checks["index"], "ok": True, "points": 1}
        assert checks["catalog"]["ok"] and checks["auth"]["ok"] and checks["auth"]["mode"] == "dev"
        assert checks["model"]["ok"] and checks["model"]["dim"] == 64
        assert HTTP.get(f"{env.url}/healthz").json() == {"status": "ok"}


def test_not_ready_when_the_index_is_down(tmp_path: Path) -> None:
    with running(tmp_path) as env:
        env.services.index.close()
        r = HTTP.get(f"{env.url}/readyz")
        assert r.status_code == 503 and int(r.headers["retry-after"]) > 0
        body = r.json()
        assert body["status"] == "not_ready"
        assert body["checks"]["index"]["ok"] is False and body["checks"]["index"]["code"] == "backend_unavailable"
        assert body["checks"]["catalog"]["ok"] is True
        assert HTTP.get(f"{env.url}/healthz").status_code == 200  # alive: restart is not the cure


def test_not_ready_when_the_catalog_is_down(tmp_path: Path) -> None:
    with running(tmp_path) as env:
        break_sqlite_catalog(env.services)
        r = HTTP.get(f"{env.url}/readyz")
        assert r.status_code == 503 and r.headers["retry-after"]
        body = r.json()
        assert body["checks"]["catalog"] == {**body["checks"]["catalog"], "ok": False, "code": "catalog_unavailable"}
        assert body["checks"]["index"]["ok"] is True
        repair_sqlite_catalog(env.services)
        assert HTTP.get(f"{env.url}/readyz").status_code == 200


def test_oidc_ready_with_keys_and_not_without(tmp_path: Path) -> None:
    with JwksServer(jwks(rsa_key("k1"))) as idp:
        auth = AuthSettings(mode="oidc", jwks_cooldown_s=0,
                            issuers=[IssuerSettings(issuer=idp.issuer, jwks_uri=idp.issuer + "/jwks")])
        with running(tmp_path / "up", auth=auth) as env:
            r = HTTP.get(f"{env.url}/readyz")
            assert r.status_code == 200, r.text
            assert r.json()["checks"]["auth"] == {**r.json()["checks"]["auth"], "ok": True, "mode": "oidc",
                                                  "issuers": {idp.issuer: {"keys": 1}}}
            idp.status = 503  # the IdP goes down: cached keys keep serving inside their grace period
            assert HTTP.get(f"{env.url}/readyz").status_code == 200
    with JwksServer(jwks(rsa_key("k1"))) as idp:
        idp.status = 503  # never reachable: no key was ever fetched
        auth = AuthSettings(mode="oidc", jwks_cooldown_s=0,
                            issuers=[IssuerSettings(issuer=idp.issuer, jwks_uri=idp.issuer + "/jwks")])
        with running(tmp_path / "down", auth=auth) as env:
            r = HTTP.get(f"{env.url}/readyz")
            assert r.status_code == 503 and r.headers["retry-after"]
            assert r.json()["checks"]["auth"]["ok"] is False
            assert r.json()["checks"]["auth"]["code"] == "jwks_unavailable"


def test_stale_source_is_flagged_everywhere(tmp_path: Path) -> None:
    sla = IngestSettings(source_sla_s={"wiki": 3600, "tickets": 1, "crm": 60})
    with running(tmp_path, ingest=sla) as env:
        env.push("wiki", "guide", "Revenue recognition guide.", ["tenant:acme"])
        env.push("tickets", "t-1", "Ticket about revenue numbers.", ["tenant:acme"])
        user = env.auth("erin")
        fresh = env.search(user, "revenue")
        assert doc_ids(fresh) == {"guide", "t-1"} and fresh.json()["stale_sources"] == []
        time.sleep(1.3)  # tickets' SLA is 1 s

        both = env.search(user, "revenue")
        assert both.json()["stale_sources"] == ["tickets"]
        assert any("tickets" in w and "SLA" in w for w in both.json()["warnings"])
        only_wiki = env.search(user, "revenue", sources=["wiki"])
        assert doc_ids(only_wiki) == {"guide"} and only_wiki.json()["stale_sources"] == []
        doc = HTTP.get(f"{env.url}/v1/documents/tickets/t-1", headers=user)
        assert doc.json()["stale_sources"] == ["tickets"]
        last = list(env.services.audit.export())[-1]
        assert last["stale_sources"] == ["tickets"]

        r = HTTP.get(f"{env.url}/readyz")
        assert r.status_code == 200  # staleness warns; it does not take the process out of rotation
        body = r.json()
        assert body["status"] == "degraded" and body["stale_sources"] == ["crm", "tickets"]
        assert any("crm" in w and "never" in w for w in body["warnings"])

        m = env.metrics()
        assert sample(m, "clearance_source_stale", source="tickets") == 1
        assert sample(m, "clearance_source_stale", source="wiki") == 0
        assert (sample(m, "clearance_source_lag_seconds", source="tickets") or 0) > 1
        assert sample(m, "clearance_source_sla_seconds", source="tickets") == 1

        # A successful push restarts the source's freshness clock.
        r = HTTP.patch(f"{env.url}/v1/sources/tickets/documents/t-1/acl", json={"allow": ["tenant:acme"]},
                       headers=env.auth("etl", scopes=[INGEST]))
        assert r.status_code == 200
        assert env.search(user, "revenue").json()["stale_sources"] == []
        assert sample(env.metrics(), "clearance_source_stale", source="tickets") == 0


def test_filesystem_sync_sets_freshness(tmp_path: Path) -> None:
    folder = tmp_path / "share"
    folder.mkdir()
    (folder / "acl.toml").write_text('[folders."."]\nallow = ["tenant:acme"]\n')
    (folder / "memo.txt").write_text("Revenue memo.")
    with running(tmp_path, ingest=IngestSettings(source_sla_s={"share": 1})) as env:
        assert HTTP.get(f"{env.url}/readyz").json()["stale_sources"] == ["share"]  # declared, never synced
        register_source(env.services, "share", kind="filesystem", root=folder)  # dev mode: its root is readable
        r = HTTP.post(f"{env.url}/v1/ingest/jobs", json={"path": str(folder), "source": "share"},
                      headers=env.auth("etl", scopes=[INGEST]))
        assert r.status_code == 200
        assert HTTP.get(f"{env.url}/readyz").json()["stale_sources"] == []
        assert env.search(env.auth("erin"), "revenue memo").json()["stale_sources"] == []
