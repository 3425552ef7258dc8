"""``/metrics`` over real HTTP: every family moves with the traffic that should move it, with
units in the names and route templates (never raw paths) as labels; two apps in one process
keep separate registries."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from core.settings import IngestSettings
from retrieval.embedder import HashEmbedder
from testkit.sources import register_source
from tests.api.ops_env import HTTP, INGEST, doc_ids, running, sample

SEARCH_EP = "/v1/search"
PUT_EP = "/v1/sources/{source}/documents/{doc_id:path}"
DOC_EP = "/v1/documents/{source}/{doc_id:path}"


class CountingEmbedder(HashEmbedder):
    def __init__(self) -> None:
        super().__init__(64)
        self.texts = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.texts += len(texts)
        return super().embed(texts)


def test_every_family_moves_with_traffic(tmp_path: Path) -> None:
    emb = CountingEmbedder()
    started = time.time()
    ingest_settings = IngestSettings(source_sla_s={"erp": 3600, "crm": 60})
    with running(tmp_path, embedder=emb, ingest=ingest_settings) as env:
        svc = env.auth("etl", scopes=[INGEST])
        env.push("erp", "reports/q3", "Quarterly revenue forecast.", ["group:finance"])
        env.push("erp", "reports/q3", "Quarterly revenue forecast.", ["group:finance"])  # unchanged
        bad = HTTP.put(f"{env.url}/v1/sources/erp/documents/blank", json={"filename": "b.txt", "content": "   "},
                       headers=svc)
        assert bad.status_code == 422
        folder = tmp_path / "files"
        folder.mkdir()
        (folder / "acl.toml").write_text('[folders."."]\nallow = ["tenant:acme"]\n')
        (folder / "good.txt").write_text("Revenue grew in the north region.")
        (folder / "tool.exe").write_text("not a document")
        register_source(env.services, "files", kind="filesystem", root=folder)
        r = HTTP.post(f"{env.url}/v1/ingest/jobs", json={"path": str(folder), "source": "files"}, headers=svc)
        assert r.status_code == 200 and r.json()["counts"] == {"added": 1, "failed": 1}

        alice = env.auth("alice", ["finance"])
        hits = sum(len(doc_ids(env.search(alice, q))) for q in ("revenue forecast", "north region", "nothing"))
        assert HTTP.post(f"{env.url}/v1/search", json={"query": "x"}).status_code == 401
        assert HTTP.post(f"{env.url}/v1/search", json={"query": "x"},
                         headers={"authorization": "Bearer not.a.token"}).status_code == 401
        assert HTTP.post(f"{env.url}/v1/search", json={"query": "x"}, headers=svc).status_code == 403
        assert HTTP.get(f"{env.url}/v1/documents/erp/nope", headers=alice).status_code == 404
        assert HTTP.post(f"{env.url}/v1/search", json={"query": "x", "top_k": 0}, headers=alice).status_code == 422
        assert HTTP.get(f"{env.url}/no/such/route").status_code == 404

        m = env.metrics()
        assert sample(m, "clearance_request_seconds_count", endpoint=SEARCH_EP, method="POST") == 7
        assert sample(m, "clearance_request_seconds_count", endpoint=PUT_EP, method="PUT") == 3
        assert sample(m, "clearance_requests_total", endpoint=SEARCH_EP, method="POST", status="200") == 3
        assert sample(m, "clearance_requests_total", endpoint="unmatched", method="GET", status="404") == 1
        assert not any("nope" in str(labels) for _, labels in m), "raw paths must never become labels"
        assert sample(m, "clearance_search_seconds_count", leg="encode") == 3
        assert sample(m, "clearance_search_seconds_count", leg="engine") == 3
        assert (sample(m, "clearance_search_seconds_sum", leg="engine") or 0) > 0
        assert sample(m, "clearance_search_results_count") == 3 and sample(m, "clearance_search_results_sum") == hits
        refused: dict[tuple[str, str], float] = {}
        for (name, labels), v in m.items():
            if name == "clearance_requests_refused_total":
                key = (dict(labels)["status"], dict(labels)["code"])
                refused[key] = refused.get(key, 0) + v
        assert refused[("401", "missing_token")] == 1 and refused[("401", "invalid_token")] == 1
        assert refused[("403", "insufficient_scope")] == 1 and refused[("404", "not_found")] == 2
        assert refused[("422", "invalid_request")] == 1 and refused[("422", "empty_file")] == 1
        assert sample(m, "clearance_ingest_documents_total", source="erp", outcome="added") == 1
        assert sample(m, "clearance_ingest_documents_total", source="erp", outcome="unchanged") == 1
        assert sample(m, "clearance_ingest_documents_total", source="erp", outcome="failed") == 1
        assert sample(m, "clearance_ingest_documents_total", source="files", outcome="added") == 1
        assert sample(m, "clearance_ingest_documents_total", source="files", outcome="failed") == 1
        assert sample(m, "clearance_parse_errors_total", source="erp", code="empty_file") == 1
        assert sample(m, "clearance_parse_errors_total", source="files", code="unsupported_type") == 1
        assert sample(m, "clearance_embed_texts_total", kind="document") == emb.texts - 3  # queries go through embed
        assert sample(m, "clearance_embed_texts_total", kind="query") == 3
        assert (sample(m, "clearance_embed_seconds_total", kind="document") or 0) > 0
        elapsed = time.time() - started
        for source in ("erp", "files"):
            lag = sample(m, "clearance_source_lag_seconds", source=source)
            assert lag is not None and 0 <= lag <= elapsed
            assert sample(m, "clearance_source_stale", source=source) == 0
        assert sample(m, "clearance_source_sla_seconds", source="erp") == 3600
        assert sample(m, "clearance_source_lag_seconds", source="crm") == math.inf  # SLA declared, never synced
        assert sample(m, "clearance_source_stale", source="crm") == 1
        assert sample(m, "clearance_index_points") == env.services.index.size() == 2
        assert sample(m, "clearance_audit_events_total", action="search") == 3
        assert sample(m, "clearance_audit_events_total", action="document") == 1  # the 404 read

        env.services.index.close()  # the index goes down: a 503, counted by code
        r = env.search(alice, "revenue")
        assert r.status_code == 503
        m = env.metrics()
        assert sample(m, "clearance_requests_refused_total", endpoint=SEARCH_EP, status="503", code="backend_unavailable") == 1
        assert sample(m, "clearance_index_points") is None  # left out, not a failed scrape


def test_two_apps_in_one_process_keep_separate_registries(tmp_path: Path) -> None:
    with running(tmp_path / "a") as a, running(tmp_path / "b") as b:
        a.push("erp", "x", "revenue", ["tenant:acme"])
        assert a.search(a.auth("u"), "revenue").status_code == 200
        ma, mb = a.metrics(), b.metrics()
        assert sample(ma, "clearance_search_results_count") == 1
        assert sample(mb, "clearance_search_results_count") == 0
        assert sample(mb, "clearance_ingest_documents_total", source="erp", outcome="added") is None
