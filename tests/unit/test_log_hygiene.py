"""Logs never hold tokens or raw claims, and every line of a request carries its request id.

The detector is tested on its own; then the real app runs over HTTP at DEBUG level through
valid, forged, expired and garbage tokens, searches, document reads, pushes, admin calls and
errors (404, 422, 503) while every formatted record is captured and scanned. The whole test
session is scanned the same way (``tests/conftest.py``)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.log_hygiene import LeakScanner, find_secrets
from tests.api.ops_env import ADMIN, HTTP, INGEST, running

JWT_SAMPLE = ("eyJhbGciOiJSUzI1NiIsInR5cCI6ImF0K2p3dCJ9.eyJzdWIiOiJhbGljZSJ9."
              "c2lnbmF0dXJlLWJ5dGVzLWhlcmUtYW5kLXRoZXJl")
OPAQUE = "Zk3qR8vN2xLp7TwQ9sYb4HcJ6mUa1DgE5oKi0rVt-X_"  # 43 chars, what token_urlsafe(32) looks like


@pytest.mark.parametrize("text", [
    f"Authorization: Bearer {JWT_SAMPLE}",
    f'{{"event": "auth.failed", "token": "{JWT_SAMPLE[:60]}"}}',
    f"refresh_token={OPAQUE}",
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj",  # PEM body line
])
def test_detector_finds_token_shaped_text(text: str) -> None:
    assert find_secrets(text)


@pytest.mark.parametrize("text", [
    "content_hash=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "request_id=1fe0fe31ab43498bb8b2a19ef7ac52b6 id=be7d32e2-1450-5f1c-96d6-5bdb4ce670d4",
    "/tmp/pytest-of-root/pytest-12/test_stale_source_is_flagged_everywhere0/var/edge",
    "endpoint=/v1/admin/audit/documents/{source}/{doc_id:path} ts=2026-11-22T02:12:45.212Z",
    "tests/api/test_metrics.py::test_every_family_moves_with_traffic (call)",
    "clearance_ingest_documents_total{source=erp,outcome=added}",
])
def test_detector_ignores_ordinary_log_content(text: str) -> None:
    assert find_secrets(text) == []


def test_scanner_records_leaks_from_any_logger() -> None:
    scanner = LeakScanner()
    logger = logging.getLogger("testkit.log_hygiene.isolated")
    logger.propagate = False  # keep this deliberate leak away from the session-wide scan
    logger.setLevel(logging.DEBUG)
    logger.addHandler(scanner)
    try:
        logger.warning("oops %s", JWT_SAMPLE)
        logger.info("fine", extra={"fields": {"hits": 3}})
    finally:
        logger.removeHandler(scanner)
    assert scanner.scanned == 2 and len(scanner.leaks) == 1
    assert JWT_SAMPLE not in scanner.leaks[0].describe()  # the report redacts what it found


@pytest.fixture
def captured() -> Iterator[LeakScanner]:
    scanner = LeakScanner()
    scanner.lines = []
    root = logging.getLogger()
    level = root.level
    root.addHandler(scanner)
    yield scanner
    root.removeHandler(scanner)
    root.setLevel(level)


def test_a_full_api_run_logs_no_token_and_tags_every_request_line(tmp_path: Path, captured: LeakScanner) -> None:
    with running(tmp_path) as env:
        logging.getLogger().setLevel(logging.DEBUG)  # after create_app, which sets the configured level
        dev = env.services.auth.dev
        assert dev is not None
        good = dev.mint("alice", groups=["finance"], scopes=["clearance:search"])
        ingest = dev.mint("etl", scopes=[INGEST])
        admin = dev.mint("root", scopes=[ADMIN])
        head, payload, sig = good.split(".")
        forged = f"{head}.{payload}.{sig[::-1]}"
        expired = dev.mint("alice", groups=["finance"], ttl_s=-3600)
        tokens = [good, ingest, admin, forged, expired, f"{head}.{payload}", "garbage"]

        def bearer(t: str) -> dict[str, str]:
            return {"authorization": f"Bearer {t}"}

        url = env.url
        assert HTTP.post(f"{url}/v1/admin/sources", headers=bearer(admin),
                         json={"name": "erp", "kind": "push", "writers": ["user:etl"]}).status_code == 201
        assert HTTP.put(f"{url}/v1/sources/erp/documents/q3", headers=bearer(ingest),
                        json={"filename": "q3.txt", "content": "revenue forecast", "acl": {"allow": ["group:finance"]}}
                        ).status_code == 200
        assert HTTP.put(f"{url}/v1/sources/erp/documents/bad", headers=bearer(ingest),
                        json={"filename": "b.exe", "content": "x"}).status_code == 422
        assert HTTP.patch(f"{url}/v1/sources/erp/documents/q3/acl", headers=bearer(ingest),
                          json={"allow": ["group:finance", "group:exec"]}).status_code == 200
        assert HTTP.post(f"{url}/v1/search", headers=bearer(good), json={"query": "revenue"}).status_code == 200
        assert HTTP.get(f"{url}/v1/documents/erp/q3", headers=bearer(good)).status_code == 200
        assert HTTP.get(f"{url}/v1/documents/erp/none", headers=bearer(good)).status_code == 404
        assert HTTP.post(f"{url}/v1/search", headers=bearer(good), json={"query": ""}).status_code == 422
        assert HTTP.get(f"{url}/v1/whoami", headers=bearer(good)).status_code == 200
        assert HTTP.get(f"{url}/v1/admin/audit/documents/erp/q3", headers=bearer(admin)).status_code == 200
        assert HTTP.get(f"{url}/v1/admin/sources", headers=bearer(good)).status_code == 403
        for bad in tokens[3:]:
            r = HTTP.post(f"{url}/v1/search", headers=bearer(bad), json={"query": "revenue"})
            assert r.status_code == 401, bad
        assert HTTP.post(f"{url}/v1/search", headers={"authorization": good}, json={"query": "x"}).status_code == 401
        assert HTTP.delete(f"{url}/v1/sources/erp/documents/q3", headers=bearer(ingest)).status_code == 204
        env.services.index.close()
        r = HTTP.post(f"{url}/v1/search", headers={**bearer(good), "x-request-id": "req-hygiene-503"},
                      json={"query": "revenue"})
        assert r.status_code == 503

    lines = captured.lines or []
    assert len(lines) > 20 and captured.scanned == len(lines)
    assert captured.leaks == [], [leak.describe() for leak in captured.leaks]
    text = "\n".join(lines)
    for token in tokens:
        for part in token.split("."):
            assert len(part) < 16 or part not in text, "a token fragment reached the logs"
    records = [json.loads(line) for line in lines]
    assert not any(k in r for r in records for k in ("claims", "groups", "scope", "token", "authorization"))
    # Every line the app writes while serving a request carries that request's id.
    served = [r for r in records if r["logger"].startswith("clearance.")]
    assert served and all(r.get("request_id") for r in served), [r for r in served if not r.get("request_id")]
    failing = [r for r in records if r.get("request_id") == "req-hygiene-503"]
    assert {r["event"] for r in failing} >= {"index.unavailable", "request.failed", "http.request"}
