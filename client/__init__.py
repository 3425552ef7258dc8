"""Python client for the Clearance API: ``Client`` (sync) and ``AsyncClient`` (asyncio), on httpx
only.

- The token is the end user's: give it per call (``token=``), or once as a string or a callable
  that returns the current token (called on every request, so an assistant can pass each user's
  token, or refresh one).
- Results are typed (``client.models``); errors are the tree in ``client.errors``, chosen from
  the API's stable error codes.
- Retries: only a 503 that carries ``Retry-After`` is retried, after
  ``max(Retry-After, backoff_s * 2**attempt)`` seconds (capped by ``max_backoff_s``), at most
  ``max_retries`` times. Nothing else is retried: a 401 needs a new token, a 4xx a new request.

```python
from client import Client

with Client("http://127.0.0.1:8000", token=lambda: current_user_token()) as c:
    page = c.search("travel expenses", top_k=5, group_by="document")
    for doc in page.documents or []:
        print(doc.title, doc.uri, doc.hits[0].snippet)
```
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime
from typing import Any, Literal
from urllib.parse import quote

import httpx

from client.errors import (
    AuthenticationError,
    BackendUnavailableError,
    ClearanceError,
    InvalidCursorError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    ServerError,
    error_for,
)
from client.models import Document, DocumentChunk, DocumentHits, Hit, Provenance, SearchPage, WhoAmI

__all__ = [
    "Client", "AsyncClient", "TokenSource", "AsyncTokenSource",
    "ClearanceError", "AuthenticationError", "PermissionDeniedError", "NotFoundError", "InvalidRequestError",
    "InvalidCursorError", "BackendUnavailableError", "ServerError",
    "Hit", "Provenance", "SearchPage", "DocumentHits", "Document", "DocumentChunk", "WhoAmI",
]

TokenSource = str | Callable[[], str] | None
AsyncTokenSource = str | Callable[[], str] | Callable[[], Awaitable[str]] | None
Mode = Literal["hybrid", "dense", "bm25"]
GroupBy = Literal["chunk", "document"]


def _search_body(query: str, *, top_k: int, mode: Mode, max_age: int | None, sources: list[str] | None,
                 modified_after: datetime | None, modified_before: datetime | None, group_by: GroupBy,
                 chunks_per_document: int, metadata: dict[str, Any] | None, cursor: str | None,
                 explain: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"query": query, "top_k": top_k, "mode": mode}
    optional = {"max_age": max_age, "sources": sources, "metadata": metadata, "cursor": cursor,
                "modified_after": modified_after.isoformat() if modified_after else None,
                "modified_before": modified_before.isoformat() if modified_before else None}
    body.update({k: v for k, v in optional.items() if v is not None})
    if group_by != "chunk":
        body.update(group_by=group_by, chunks_per_document=chunks_per_document)
    if explain:
        body["explain"] = True
    return body


def _document_path(source: str, doc_id: str) -> str:
    return f"/v1/documents/{quote(source, safe='')}/{quote(doc_id, safe='/')}"


def _retry_after_s(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class _Base:
    def __init__(self, base_url: str, *, timeout_s: float, max_retries: int, backoff_s: float,
                 max_backoff_s: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s

    def _delay(self, resp: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before retrying ``resp``, or None when it must not be retried."""
        if resp.status_code != 503 or attempt >= self.max_retries:
            return None
        after = _retry_after_s(resp)
        if after is None:
            return None
        return min(self.max_backoff_s, max(after, self.backoff_s * 2 ** attempt))

    @staticmethod
    def _result(resp: httpx.Response) -> Any:
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.status_code >= 400:
            raise error_for(resp.status_code, body, _retry_after_s(resp))
        return body


class Client(_Base):
    """Synchronous client. One per process is enough; it is safe to share between threads."""

    def __init__(self, base_url: str, *, token: TokenSource = None, timeout_s: float = 30.0, max_retries: int = 3,
                 backoff_s: float = 0.5, max_backoff_s: float = 30.0, http: httpx.Client | None = None) -> None:
        super().__init__(base_url, timeout_s=timeout_s, max_retries=max_retries, backoff_s=backoff_s,
                         max_backoff_s=max_backoff_s)
        self._token = token
        self._http = http or httpx.Client(timeout=timeout_s)
        self._owns_http = http is None
        self._sleep: Callable[[float], None] = time.sleep

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def _headers(self, token: TokenSource) -> dict[str, str]:
        source = token if token is not None else self._token
        value = source() if callable(source) else source
        return {"authorization": f"Bearer {value}"} if value else {}

    def request(self, method: str, path: str, *, token: TokenSource = None, **kw: Any) -> Any:
        """One API call with the retry policy; the parsed JSON answer or a ``ClearanceError``."""
        attempt = 0
        while True:
            resp = self._http.request(method, self.base_url + path, headers=self._headers(token), **kw)
            delay = self._delay(resp, attempt)
            if delay is None:
                return self._result(resp)
            self._sleep(delay)
            attempt += 1

    def search(self, query: str, *, top_k: int = 10, mode: Mode = "hybrid", max_age: int | None = None,
               sources: list[str] | None = None, modified_after: datetime | None = None,
               modified_before: datetime | None = None, group_by: GroupBy = "chunk", chunks_per_document: int = 3,
               metadata: dict[str, Any] | None = None, cursor: str | None = None, explain: bool = False,
               token: TokenSource = None) -> SearchPage:
        body = _search_body(query, top_k=top_k, mode=mode, max_age=max_age, sources=sources,
                            modified_after=modified_after, modified_before=modified_before, group_by=group_by,
                            chunks_per_document=chunks_per_document, metadata=metadata, cursor=cursor, explain=explain)
        return SearchPage.from_json(self.request("POST", "/v1/search", json=body, token=token))

    def search_pages(self, query: str, *, token: TokenSource = None, **kw: Any) -> Iterator[SearchPage]:
        """Every page of a search, following ``next_cursor`` (same arguments, same token)."""
        cursor = None
        while True:
            page = self.search(query, cursor=cursor, token=token, **kw)
            yield page
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def document(self, source: str, doc_id: str, *, token: TokenSource = None) -> Document:
        return Document.from_json(self.request("GET", _document_path(source, doc_id), token=token))

    def count(self, *, token: TokenSource = None) -> int:
        return int(self.request("GET", "/v1/chunks/count", token=token)["visible_chunks"])

    def whoami(self, *, token: TokenSource = None) -> WhoAmI:
        return WhoAmI.from_json(self.request("GET", "/v1/whoami", token=token))

    def submit_ingest_job(self, path: str, source: str | None = None, *, token: TokenSource = None) -> dict[str, Any]:
        """Ask the server to sync a folder on its own filesystem (``clearance:ingest``)."""
        body: dict[str, Any] = {"path": path}
        if source:
            body["source"] = source
        return dict(self.request("POST", "/v1/ingest/jobs", json=body, token=token))


class AsyncClient(_Base):
    """asyncio client; ``token`` may also be an async callable."""

    def __init__(self, base_url: str, *, token: AsyncTokenSource = None, timeout_s: float = 30.0,
                 max_retries: int = 3, backoff_s: float = 0.5, max_backoff_s: float = 30.0,
                 http: httpx.AsyncClient | None = None) -> None:
        super().__init__(base_url, timeout_s=timeout_s, max_retries=max_retries, backoff_s=backoff_s,
                         max_backoff_s=max_backoff_s)
        self._token = token
        self._http = http or httpx.AsyncClient(timeout=timeout_s)
        self._owns_http = http is None
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def _headers(self, token: AsyncTokenSource) -> dict[str, str]:
        source = token if token is not None else self._token
        value: Any = source() if callable(source) else source
        if isinstance(value, Awaitable):
            value = await value
        return {"authorization": f"Bearer {value}"} if value else {}

    async def request(self, method: str, path: str, *, token: AsyncTokenSource = None, **kw: Any) -> Any:
        attempt = 0
        while True:
            resp = await self._http.request(method, self.base_url + path, headers=await self._headers(token), **kw)
            delay = self._delay(resp, attempt)
            if delay is None:
                return self._result(resp)
            await self._sleep(delay)
            attempt += 1

    async def search(self, query: str, *, top_k: int = 10, mode: Mode = "hybrid", max_age: int | None = None,
                     sources: list[str] | None = None, modified_after: datetime | None = None,
                     modified_before: datetime | None = None, group_by: GroupBy = "chunk",
                     chunks_per_document: int = 3, metadata: dict[str, Any] | None = None, cursor: str | None = None,
                     explain: bool = False, token: AsyncTokenSource = None) -> SearchPage:
        body = _search_body(query, top_k=top_k, mode=mode, max_age=max_age, sources=sources,
                            modified_after=modified_after, modified_before=modified_before, group_by=group_by,
                            chunks_per_document=chunks_per_document, metadata=metadata, cursor=cursor, explain=explain)
        return SearchPage.from_json(await self.request("POST", "/v1/search", json=body, token=token))

    async def search_pages(self, query: str, *, token: AsyncTokenSource = None,
                           **kw: Any) -> AsyncIterator[SearchPage]:
        cursor = None
        while True:
            page = await self.search(query, cursor=cursor, token=token, **kw)
            yield page
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def document(self, source: str, doc_id: str, *, token: AsyncTokenSource = None) -> Document:
        return Document.from_json(await self.request("GET", _document_path(source, doc_id), token=token))

    async def count(self, *, token: AsyncTokenSource = None) -> int:
        return int((await self.request("GET", "/v1/chunks/count", token=token))["visible_chunks"])

    async def whoami(self, *, token: AsyncTokenSource = None) -> WhoAmI:
        return WhoAmI.from_json(await self.request("GET", "/v1/whoami", token=token))
