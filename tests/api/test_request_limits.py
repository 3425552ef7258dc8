"""Request limits on every route (issue #16), through real HTTP (uvicorn on loopback): body size
(`api.max_body_bytes`, enforced as the body streams in, never after reading it all), JSON depth,
header size; each refusal in the project's error shape with a stable code."""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from api.app import create_app
from api.limits import JsonDepth
from app.services import Services, build_services
from core.errors import RequestTooLargeError
from core.settings import ApiSettings, IngestSettings, Settings, body_limit_for
from testkit.sources import register_sources
from tests.conftest import LiveServer, make_settings

LIMIT = 64 * 1024
HTTP = httpx.Client(timeout=60)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Services, LiveServer]]:
    settings = make_settings(tmp_path_factory.mktemp("limits"),
                             api=ApiSettings(max_body_bytes=LIMIT, max_json_depth=8, max_header_bytes=4096))
    services = build_services(settings)
    register_sources(services, ["erp"])
    with LiveServer(create_app(settings, services)) as server:
        yield services, server
    services.close()


def ingest_headers(services: Services) -> dict[str, str]:
    assert services.auth.dev is not None
    return {"authorization": f"Bearer {services.auth.dev.mint('etl', scopes=['clearance:ingest', 'clearance:search'])}"}


def url(server: LiveServer, doc: str = "a.md") -> str:
    return f"{server.url}/v1/sources/erp/documents/{doc}"


def refused(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["message"]
    assert error["request_id"] == r.headers["x-request-id"]


def test_a_body_under_the_limit_is_served(env: tuple[Services, LiveServer]) -> None:
    services, server = env
    r = HTTP.put(url(server), json={"filename": "a.md", "content": "Revenue forecast approved.",
                                    "acl": {"allow": ["group:finance"]}}, headers=ingest_headers(services))
    assert r.status_code == 200, r.text


def test_a_body_over_the_limit_is_413_body_too_large(env: tuple[Services, LiveServer]) -> None:
    services, server = env
    body = {"filename": "big.md", "content": "word " * LIMIT}
    refused(HTTP.put(url(server, "big.md"), json=body, headers=ingest_headers(services)), 413, "body_too_large")
    # every route: a search body over the limit too
    refused(HTTP.post(f"{server.url}/v1/search", json={"query": "x" * (2 * LIMIT)}, headers=ingest_headers(services)),
            413, "body_too_large")


def test_without_a_token_it_is_still_401_whatever_the_body(env: tuple[Services, LiveServer]) -> None:
    _, server = env
    r = HTTP.put(url(server, "big.md"), json={"filename": "big.md", "content": "word " * LIMIT})
    assert r.status_code == 401


def test_a_chunked_body_without_content_length_is_cut_off_at_the_limit(env: tuple[Services, LiveServer]) -> None:
    services, server = env
    sent = 0

    def stream() -> Iterator[bytes]:
        nonlocal sent
        yield b'{"filename": "big.md", "content": "'
        for _ in range(64):
            sent += 4096
            yield b"a" * 4096
        yield b'"}'

    r = HTTP.put(url(server, "chunked.md"), content=stream(),
                 headers={**ingest_headers(services), "content-type": "application/json"})
    refused(r, 413, "body_too_large")


def test_a_declared_25_mb_body_is_refused_before_it_is_sent(env: tuple[Services, LiveServer]) -> None:
    """The client declares 25 MB and sends 1 KB: the 413 comes back at once, so the server never
    waited for (let alone read) the rest."""
    services, server = env
    head = (f"PUT /v1/sources/erp/documents/huge.md HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: {ingest_headers(services)['authorization']}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {25 * 1024 * 1024}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(head + b'{"filename": "huge.md", "content": "' + b"a" * 1024)
        started = time.monotonic()
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = s.recv(65536)
            if not chunk:
                break
            response += chunk
        assert time.monotonic() - started < 5
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert b"body_too_large" in response or b"content-length" in response.lower()


def test_json_nested_deeper_than_the_limit_is_413_json_too_deep(env: tuple[Services, LiveServer]) -> None:
    services, server = env
    deep = {"filename": "d.md", "content": "x", "metadata": json.loads("[" * 50 + "]" * 50)}
    refused(HTTP.put(url(server, "d.md"), json=deep, headers=ingest_headers(services)), 413, "json_too_deep")
    # Brackets inside strings are text, not nesting.
    r = HTTP.post(f"{server.url}/v1/search", json={"query": "[[[[[[[[[[[[[[[[ {{{{{{{{{{{{ \\\" [[[["},
                  headers=ingest_headers(services))
    assert r.status_code == 200, r.text


def test_headers_over_the_limit_are_431_headers_too_large(env: tuple[Services, LiveServer]) -> None:
    services, server = env
    r = HTTP.get(f"{server.url}/healthz", headers={"x-padding": "p" * 5000})
    refused(r, 431, "headers_too_large")
    assert HTTP.get(f"{server.url}/healthz").status_code == 200


def test_default_body_limit_fits_the_largest_document_base64_encoded() -> None:
    settings = Settings(ingest=IngestSettings(max_file_bytes=3 * 1024 * 1024))
    limit = settings.api.max_body_bytes
    assert limit == body_limit_for(3 * 1024 * 1024) == 4 * 1024 * 1024 + 1024 * 1024
    envelope = json.dumps({"filename": "x.pdf", "content_base64": base64.b64encode(b"\0" * 3 * 1024 * 1024).decode(),
                           "acl": {"allow": ["group:finance"]}, "metadata": {"owner": "etl"}})
    assert len(envelope) <= limit
    assert Settings().api.max_body_bytes == body_limit_for(Settings().ingest.max_file_bytes)


@pytest.mark.parametrize("pieces", [1, 2, 3, 7])
def test_json_depth_scanner_counts_only_structure_across_pieces(pieces: int) -> None:
    text = json.dumps({"a": ["[[[[\\\"{{{{", {"b": [1, {"c": "]]]]\\\\"}]}]}).encode()
    size = -(-len(text) // pieces)
    scanner = JsonDepth(5)  # {"a": [ {"b": [ {  is five deep
    for i in range(0, len(text), size):
        scanner.feed(text[i:i + size])
    assert scanner.depth == 0
    with pytest.raises(RequestTooLargeError) as err:
        JsonDepth(4).feed(text)
    assert err.value.code == "json_too_deep"
