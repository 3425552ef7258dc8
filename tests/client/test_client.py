"""The Python client (``client``) against the real app behind uvicorn: typed results, the error
tree from the API's codes, per-call and callable tokens, paging, async, and retries on a real
503 (the catalog broken and repaired under the running server)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from client import (
    AsyncClient,
    AuthenticationError,
    BackendUnavailableError,
    Client,
    InvalidCursorError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    SearchPage,
    ServerError,
)
from tests.api.ops_env import Env, break_sqlite_catalog, repair_sqlite_catalog, running
from tests.api.test_search_agents import register

DOCS = {
    "all/handbook.txt": ("Zebra handbook for everyone.", ["tenant:acme"]),
    "fin/q3.txt": ("Zebra forecast for finance.", ["group:finance"]),
    "hr/bands.txt": ("Zebra salary bands for hr.", ["group:hr"]),
}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with running(tmp_path_factory.mktemp("client")) as e:
        register(e, "kb")
        for rel, (text, allow) in DOCS.items():
            e.push("kb", rel, text, allow)
        yield e


def tok(env: Env, sub: str, groups: list[str], scopes: tuple[str, ...] = ("clearance:search",)) -> str:
    return env.auth(sub, groups, scopes)["authorization"].removeprefix("Bearer ")


def test_typed_search_and_document(env: Env) -> None:
    with Client(env.url, token=tok(env, "alice", ["finance"])) as c:
        page = c.search("zebra", mode="bm25", top_k=10)
        assert isinstance(page, SearchPage) and page.low_confidence is None and page.next_cursor is None
        assert {h.provenance.doc_id for h in page.hits} == {"all/handbook.txt", "fin/q3.txt"}
        hit = page.hits[0]
        assert hit.provenance.source == "kb" and hit.provenance.modified_at is not None and hit.text
        doc = c.document("kb", "fin/q3.txt")
        assert doc.doc_id == "fin/q3.txt" and "forecast" in doc.text and doc.chunks[0].id
        assert c.count() == 2
        me = c.whoami()
        assert me.subject == "alice" and "group:finance" in me.principals
        grouped = c.search("zebra", mode="bm25", group_by="document", top_k=1)
        assert grouped.documents is not None and len(grouped.documents) == 1 and grouped.next_cursor
        pages = list(c.search_pages("zebra", mode="bm25", top_k=1))
        assert [len(p.hits) for p in pages] == [1, 1]
        assert len({p.hits[0].id for p in pages}) == 2


def test_token_per_call_or_by_callable(env: Env) -> None:
    users = iter(["alice", "bob"])
    groups = {"alice": ["finance"], "bob": ["hr"]}
    current: dict[str, str] = {}

    def token() -> str:
        current["sub"] = next(users)
        return tok(env, current["sub"], groups[current["sub"]])

    with Client(env.url, token=token) as c:
        assert c.whoami().subject == "alice"
        assert c.whoami().subject == "bob"  # called on every request
        carol = tok(env, "carol", [])
        assert c.whoami(token=carol).subject == "carol"  # per call wins
        hits = c.search("zebra", mode="bm25", token=tok(env, "bob", ["hr"])).hits
        assert {h.provenance.doc_id for h in hits} == {"all/handbook.txt", "hr/bands.txt"}


def test_errors_map_to_the_tree(env: Env) -> None:
    with Client(env.url) as c:
        with pytest.raises(AuthenticationError) as e401:
            c.search("zebra")
        assert e401.value.code == "missing_token" and e401.value.status == 401 and e401.value.request_id
        with pytest.raises(AuthenticationError) as bad:
            c.search("zebra", token="not-a-token")
        assert bad.value.code == "invalid_token"
        alice = tok(env, "alice", ["finance"])
        with pytest.raises(NotFoundError) as hidden:
            c.document("kb", "hr/bands.txt", token=alice)
        with pytest.raises(NotFoundError) as missing:
            c.document("kb", "hr/none.txt", token=alice)
        assert hidden.value.message == missing.value.message
        with pytest.raises(PermissionDeniedError) as e403:
            c.search("zebra", token=tok(env, "alice", ["finance"], ("clearance:ingest",)))
        assert e403.value.code == "insufficient_scope"
        with pytest.raises(InvalidRequestError):
            c.search("zebra", top_k=1000, token=alice)
        cursor = c.search("zebra", mode="bm25", top_k=1, token=alice).next_cursor
        with pytest.raises(InvalidCursorError):
            c.search("zebra", mode="bm25", top_k=1, cursor=cursor, token=tok(env, "bob", ["hr"]))


def test_retries_a_real_503_with_retry_after(env: Env) -> None:
    alice = tok(env, "alice", ["finance"])
    sleeps: list[float] = []
    with Client(env.url, token=alice, backoff_s=0.01) as c:
        def sleep(s: float) -> None:  # the outage ends while the client waits
            sleeps.append(s)
            repair_sqlite_catalog(env.services)

        c._sleep = sleep
        break_sqlite_catalog(env.services)
        page = c.search("zebra", mode="bm25")
        assert len(sleeps) == 1 and sleeps[0] >= 1  # waited at least Retry-After
        assert page.hits

        given_up: list[float] = []
        c._sleep = given_up.append
        break_sqlite_catalog(env.services)
        try:
            with pytest.raises(BackendUnavailableError) as e503:
                c.search("zebra", mode="bm25")
        finally:
            repair_sqlite_catalog(env.services)
        assert len(given_up) == c.max_retries and e503.value.retry_after_s is not None
        assert e503.value.code == "catalog_unavailable"


def test_async_client(env: Env) -> None:
    async def main() -> tuple[Any, ...]:
        async def token() -> str:
            return tok(env, "bob", ["hr"])

        async with AsyncClient(env.url, token=token) as c:
            page = await c.search("zebra", mode="bm25")
            pages = [p async for p in c.search_pages("zebra", mode="bm25", top_k=1)]
            doc = await c.document("kb", "hr/bands.txt")
            try:
                await c.document("kb", "fin/q3.txt")
            except NotFoundError as exc:
                err = exc
            return page, pages, doc, err, await c.count()

    page, pages, doc, err, count = asyncio.run(main())
    assert {h.provenance.doc_id for h in page.hits} == {"all/handbook.txt", "hr/bands.txt"}
    assert len(pages) == 2 and "salary" in doc.text and err.code == "not_found" and count == 2


def test_retry_policy_only_503_with_retry_after() -> None:
    """The policy on answers a healthy server never gives (network-level stand-in, not our code)."""
    calls: list[int] = []

    def answer(status: int, headers: dict[str, str]) -> httpx.MockTransport:
        def handler(request: httpx.Request) -> httpx.Response:
            calls.append(status)
            return httpx.Response(status, headers=headers, json={"error": {"code": "x", "message": "m"}})
        return httpx.MockTransport(handler)

    for status, headers, cls in ((503, {}, BackendUnavailableError), (500, {"retry-after": "1"}, ServerError),
                                 (429, {"retry-after": "1"}, Exception)):
        calls.clear()
        with Client("http://clearance.invalid", token="t", http=httpx.Client(transport=answer(status, headers))) as c:
            c._sleep = lambda s: pytest.fail("must not retry")
            with pytest.raises(cls):
                c.count()
        assert calls == [status]


def test_the_cli_talks_to_the_server_through_the_client(env: Env) -> None:
    from cli.main import _call

    ok = _call(env.url, "GET", "/v1/whoami", tok(env, "alice", ["finance"]))
    assert ok["_status"] == 200 and ok["subject"] == "alice"
    bad = _call(env.url, "POST", "/v1/search", "garbage", {"query": "x"})
    assert bad["_status"] == 401 and bad["error"]["code"] == "invalid_token"
