"""Page cursors (``retrieval.cursor``): signed, bound to the caller and the query, bounded."""

from __future__ import annotations

import pytest

from core.errors import InvalidRequestError
from core.types import Entitlements
from retrieval.cursor import MAX_SEEN, CursorCodec, caller_binding, digest, query_binding

ALICE = Entitlements("alice", "iss", "acme", frozenset({"user:alice", "group:finance", "tenant:acme"}))
ALICE_WIDER = Entitlements("alice", "iss", "acme", frozenset({"user:alice", "group:finance", "group:hr", "tenant:acme"}))
BOB = Entitlements("bob", "iss", "acme", frozenset({"user:bob", "group:finance", "tenant:acme"}))


def test_roundtrip_and_bindings() -> None:
    codec = CursorCodec(b"k" * 32)
    who, what = caller_binding(ALICE), query_binding("q3 revenue", {"mode": "hybrid"})
    c = codec.next(None, who, what, ["c1", "c2"])
    assert c is not None
    token = codec.encode(c)
    back = codec.decode(token, caller=who, query=what)
    assert back.seen == {digest("c1"), digest("c2")}
    c2 = codec.next(back, who, what, ["c3"])
    assert c2 is not None and c2.seen == {digest("c1"), digest("c2"), digest("c3")}
    assert query_binding(" q3 revenue ", {"mode": "hybrid"}) == what  # stripped like the search
    refusals = [
        (token, caller_binding(BOB), what),  # another caller
        (token, caller_binding(ALICE_WIDER), what),  # the same subject with other principals
        (token, who, query_binding("q3 revenue", {"mode": "bm25"})),  # another query shape
        (token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB"), who, what),  # tampered MAC
        ("x" + token, who, what),  # tampered body
        ("not a cursor", who, what),
        (CursorCodec(b"o" * 32).encode(c), who, what),  # another deployment's key
    ]
    for tok, caller, query in refusals:
        with pytest.raises(InvalidRequestError) as exc:
            codec.decode(tok, caller=caller, query=query)
        assert exc.value.code == "invalid_cursor"


def test_depth_is_bounded() -> None:
    codec = CursorCodec(b"k" * 32)
    assert codec.next(None, "a", "b", [f"c{i}" for i in range(MAX_SEEN)]) is None
    with pytest.raises(ValueError):
        CursorCodec(b"short")
