"""Pagination cursors for search: opaque, signed, bound to one caller and one query.

Invariants:

- A cursor is ``base64url(body) "." base64url(HMAC-SHA-256(key, body))``; a cursor whose MAC does
  not verify (tampered, forged, signed with another deployment's key) is refused with 422
  ``invalid_cursor`` before anything else happens.
- It binds the hash of the caller's principal set and tenant (``caller_binding``) and the hash of
  the query with every parameter that shapes the ranked list (``query_binding``). Replayed by
  another caller, or with another query or other filters, it is refused with 422
  ``invalid_cursor``: a cursor never carries one caller's position into another caller's scope.
- It carries short digests of every item already handed out (chunk ids, or document keys when
  grouped), so the next page skips them: no chunk is ever shown twice across pages, even if the
  ranking shifts between pages (the index may change in between). A digest collision can only
  skip an item, never show one outside the scope: the scope filter still runs on every page.
- Depth is bounded (``MAX_SEEN`` items): past it there is no next page.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from core.errors import InvalidRequestError
from core.types import Entitlements

MAX_SEEN = 1000
DIGEST_BYTES = 6


def digest(item: str) -> str:
    """The short digest a cursor keeps of an item already handed out."""
    return hashlib.blake2b(item.encode("utf-8"), digest_size=DIGEST_BYTES).hexdigest()


def caller_binding(ent: Entitlements) -> str:
    body = "\n".join([ent.tenant, ent.issuer, ent.subject, *sorted(ent.principals)])
    return hashlib.sha256(body.encode("utf-8")).hexdigest()[:32]


def query_binding(query: str, params: Mapping[str, object]) -> str:
    body = json.dumps({"q": query.strip(), "p": params}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(body.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class Cursor:
    caller: str
    query: str
    seen: frozenset[str]  # digests of the items already handed out


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CursorCodec:
    """Signs and verifies cursors with one deployment-wide key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("cursor key must be at least 16 bytes")
        self._key = key

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, b"clearance.cursor.v1\n" + body, hashlib.sha256).digest()

    def encode(self, cursor: Cursor) -> str:
        seen = b"".join(bytes.fromhex(d) for d in sorted(cursor.seen))
        body = json.dumps({"c": cursor.caller, "q": cursor.query, "s": _b64(seen)},
                          separators=(",", ":")).encode("utf-8")
        return f"{_b64(body)}.{_b64(self._mac(body))}"

    def decode(self, token: str, *, caller: str, query: str) -> Cursor:
        """The cursor, verified and checked against this caller and this query."""
        try:
            body_s, _, mac_s = token.partition(".")
            body, mac = _unb64(body_s), _unb64(mac_s)
        except (ValueError, UnicodeError):
            raise InvalidRequestError("cursor is not valid", code="invalid_cursor") from None
        if not hmac.compare_digest(mac, self._mac(body)):
            raise InvalidRequestError("cursor is not valid", code="invalid_cursor")
        raw = json.loads(body)
        if not hmac.compare_digest(str(raw["c"]), caller):
            raise InvalidRequestError("cursor was issued to another caller", code="invalid_cursor")
        if not hmac.compare_digest(str(raw["q"]), query):
            raise InvalidRequestError("cursor belongs to another query or other parameters", code="invalid_cursor")
        seen = _unb64(str(raw["s"]))
        digests = frozenset(seen[i:i + DIGEST_BYTES].hex() for i in range(0, len(seen), DIGEST_BYTES))
        return Cursor(caller, query, digests)

    def next(self, previous: Cursor | None, caller: str, query: str, handed_out: Iterable[str]) -> Cursor | None:
        """The cursor for the page after one that handed out ``handed_out``; None past the depth bound."""
        seen = set(previous.seen if previous else ())
        seen.update(digest(i) for i in handed_out)
        if len(seen) >= MAX_SEEN:
            return None
        return Cursor(caller, query, frozenset(seen))
