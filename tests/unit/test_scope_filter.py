"""The scope compiler: how conditions combine, and refusals before any index is touched."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.errors import EmptyScopeError
from core.types import Entitlements, Scope
from retrieval.payload import SAMPLE_STEPS
from retrieval.scope_filter import (
    F_ALLOW,
    F_DENY,
    F_MODIFIED,
    F_SAMPLE,
    F_SOURCE,
    F_TENANT,
    Match,
    Range,
    compile_scope,
    sampled,
)

NOW = datetime(2026, 11, 1, tzinfo=UTC)


def ent(*principals: str, tenant: str = "acme") -> Entitlements:
    return Entitlements("alice", "iss", tenant, frozenset(principals))


def test_acl_is_any_of_allow_and_none_of_deny_within_tenant() -> None:
    f = compile_scope(Scope(ent("user:alice", "group:finance")), now=NOW)
    assert f.must == (Match(F_TENANT, ("acme",)), Match(F_ALLOW, ("group:finance", "user:alice")))
    assert f.must_not == ((Match(F_DENY, ("group:finance", "user:alice")),),)


def test_empty_principals_are_refused() -> None:
    with pytest.raises(EmptyScopeError):
        compile_scope(Scope(ent()), now=NOW)


def test_empty_source_filter_is_refused_not_ignored() -> None:
    with pytest.raises(EmptyScopeError):
        compile_scope(Scope(ent("user:a"), sources=frozenset()), now=NOW)


def test_max_age_and_per_source_cutoffs() -> None:
    f = compile_scope(Scope(ent("user:a"), max_age_s=3600), now=NOW, source_max_age_s={"wiki": 86400})
    assert Range(F_MODIFIED, gte=NOW.timestamp() - 3600) in f.must
    assert (Match(F_SOURCE, ("wiki",)), Range(F_MODIFIED, lt=NOW.timestamp() - 86400)) in f.must_not


def test_caller_filters_only_add_clauses() -> None:
    base = compile_scope(Scope(ent("user:a")), now=NOW)
    after = NOW - timedelta(days=30)
    narrowed = compile_scope(Scope(ent("user:a"), sources=frozenset({"hr"}), modified_after=after), now=NOW)
    assert set(base.must) < set(narrowed.must) and base.must_not == narrowed.must_not


def test_unrestricted_scope_still_pins_the_tenant() -> None:
    f = compile_scope(Scope(ent(), unrestricted_reason="eval harness scores the full corpus"), now=NOW)
    assert f.must == (Match(F_TENANT, ("acme",)),) and f.must_not == ()


def test_a_sample_only_adds_one_clause_on_the_sample_key() -> None:
    base = compile_scope(Scope(ent("group:x", "user:a")), now=NOW)
    part = sampled(base, 0.1)
    assert part.must == (*base.must, Range(F_SAMPLE, lt=103 / SAMPLE_STEPS))  # rounded up to a key step
    assert part.must_not == base.must_not
    assert sampled(base, 1.0) is base
    assert sampled(base, 1e-9).must[-1] == Range(F_SAMPLE, lt=1 / SAMPLE_STEPS)  # never empty by rounding
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError):
            sampled(base, bad)
