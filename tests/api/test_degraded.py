"""Degraded operation, over real HTTP with real failures:

- the embedding model raises: hybrid and dense searches are answered from BM25 alone with
  ``degraded: true`` and a warning, under the same entitlement filter (never a wider answer);
- the index is down (its shard closed): 503 ``backend_unavailable`` with Retry-After, no hits;
- the catalog is down (its database cannot be opened): 503 ``catalog_unavailable`` with
  Retry-After, no hits, because an answer that cannot be audited is not served.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from retrieval.embedder import HashEmbedder
from retrieval.service import DEGRADED_DENSE
from tests.api.ops_env import HTTP, INGEST, Env, break_sqlite_catalog, doc_ids, repair_sqlite_catalog, running, sample

FINANCE_VISIBLE = {"fin/q3", "company/handbook"}


class BreakableEmbedder(HashEmbedder):
    """The hash embedder, until ``broken`` is set: then every call raises, as a crashed model would."""

    def __init__(self) -> None:
        super().__init__(64)
        self.broken = False

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if self.broken:
            raise RuntimeError("model crashed")
        return super().embed(texts)


def _corpus(env: Env) -> None:
    env.push("erp", "fin/q3", "Quarterly revenue forecast and budget.", ["group:finance"])
    env.push("erp", "company/handbook", "Handbook: revenue, travel and budget rules.", ["tenant:acme"])
    env.push("erp", "hr/case", "Confidential: revenue bonus investigation budget.", ["group:hr"])


def test_model_failure_answers_from_bm25_under_the_same_filter(tmp_path: Path) -> None:
    emb = BreakableEmbedder()
    with running(tmp_path, embedder=emb) as env:
        _corpus(env)
        alice = env.auth("alice", ["finance"])
        bm25 = env.search(alice, "revenue budget", mode="bm25").json()
        emb.broken = True
        for mode in ("hybrid", "dense"):
            r = env.search(alice, "revenue budget", mode=mode)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["degraded"] is True and body["mode"] == "bm25" and DEGRADED_DENSE in body["warnings"]
            assert doc_ids(r) == FINANCE_VISIBLE, "a degraded answer is never a wider one"
            assert [h["id"] for h in body["hits"]] == [h["id"] for h in bm25["hits"]]
        assert doc_ids(env.search(env.auth("erin"), "revenue budget")) == {"company/handbook"}
        plain = env.search(alice, "revenue budget", mode="bm25").json()
        assert plain["degraded"] is False  # bm25 mode never needed the model

        events = list(env.services.audit.export())
        assert [e["degraded"] for e in events[-4:]] == [True, True, True, False]
        assert events[-4]["params"]["mode"] == "hybrid" and events[-4]["params"]["effective_mode"] == "bm25"
        m = env.metrics()
        assert sample(m, "clearance_search_degraded_total", reason="embedder_failed") == 3
        assert sample(m, "clearance_embed_errors_total", kind="query") == 3
        ready = HTTP.get(f"{env.url}/readyz")
        assert ready.status_code == 200 and ready.json()["checks"]["model"]["degraded"] is True
        assert any("BM25" in w for w in ready.json()["warnings"])

        emb.broken = False  # the model recovers: full hybrid again, readiness clean
        r = env.search(alice, "revenue budget")
        assert r.json()["degraded"] is False and r.json()["mode"] == "hybrid"
        assert HTTP.get(f"{env.url}/readyz").json()["status"] == "ready"


def test_index_down_is_503_with_retry_after(tmp_path: Path) -> None:
    with running(tmp_path) as env:
        _corpus(env)
        alice = env.auth("alice", ["finance"])
        env.services.index.close()
        for r in (env.search(alice, "revenue"),
                  HTTP.get(f"{env.url}/v1/documents/erp/fin/q3", headers=alice),
                  HTTP.get(f"{env.url}/v1/chunks/count", headers=alice),
                  HTTP.patch(f"{env.url}/v1/sources/erp/documents/fin/q3/acl", json={"allow": []},
                             headers=env.auth("etl", scopes=[INGEST]))):
            assert r.status_code == 503, r.text
            assert int(r.headers["retry-after"]) > 0
            assert r.json() == {"error": {**r.json()["error"], "code": "backend_unavailable"}}
            assert "hits" not in r.json() and "chunks" not in r.json()
        failed = list(env.services.audit.export())[-3:]
        assert [(e["action"], e["status"], e["params"]["error"]) for e in failed] == [
            ("search", 503, "backend_unavailable"), ("document", 503, "backend_unavailable"),
            ("count", 503, "backend_unavailable")]


def test_catalog_down_is_503_and_nothing_is_served(tmp_path: Path) -> None:
    with running(tmp_path) as env:
        _corpus(env)
        alice = env.auth("alice", ["finance"])
        assert env.search(alice, "revenue").status_code == 200
        break_sqlite_catalog(env.services)
        push = HTTP.put(f"{env.url}/v1/sources/erp/documents/new", headers=env.auth("etl", scopes=[INGEST]),
                        json={"filename": "n.txt", "content": "revenue", "acl": {"allow": ["tenant:acme"]}})
        admin = HTTP.get(f"{env.url}/v1/admin/sources", headers=env.auth("root", scopes=["clearance:admin"]))
        for r in (env.search(alice, "revenue"), HTTP.get(f"{env.url}/v1/documents/erp/fin/q3", headers=alice), push,
                  admin):
            assert r.status_code == 503, r.text
            assert int(r.headers["retry-after"]) > 0 and r.json()["error"]["code"] == "catalog_unavailable"
            assert "hits" not in r.json() and "chunks" not in r.json()
        assert (sample(env.metrics(), "clearance_audit_write_failures_total") or 0) >= 2
        repair_sqlite_catalog(env.services)
        assert doc_ids(env.search(alice, "revenue")) == FINANCE_VISIBLE
