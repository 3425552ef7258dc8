from __future__ import annotations

import pytest

from core.types import Acl


@pytest.mark.parametrize("bad", ["alice", "user:", "team:x", "user: a", ":x"])
def test_principals_must_be_prefixed(bad: str) -> None:
    with pytest.raises(ValueError):
        Acl(frozenset({bad}))


def test_deny_beats_allow_and_empty_allow_is_nobody() -> None:
    acl = Acl(frozenset({"group:a"}), frozenset({"user:x"}))
    assert acl.visible_to(frozenset({"group:a", "user:y"}))
    assert not acl.visible_to(frozenset({"group:a", "user:x"}))
    assert not Acl().visible_to(frozenset({"group:a"}))
