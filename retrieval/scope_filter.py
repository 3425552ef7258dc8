"""The one place that turns a ``Scope`` into an index filter.

How conditions combine (every clause is ANDed):

1. ``tenant`` equals the caller's tenant. Always, even for unrestricted (admin/eval) scopes.
2. ACL allow: the chunk's ``acl_allow`` contains ANY of the caller's principals.
3. ACL deny: the chunk's ``acl_deny`` contains NONE of the caller's principals (deny beats
   allow, because it is a separate ANDed clause).
4. Freshness: ``modified_ts >= now - max_age`` when the query sets ``max_age``; and for every
   source with a configured maximum age, NOT (source is that source AND older than its cutoff).
5. Caller filters only narrow: ``source`` any-of the requested sources, modified date range.

An empty principal set raises ``EmptyScopeError`` here, before anything reaches an index, so
an ACL condition with an empty any-of list (which some transports read as "no condition") is
never produced. The compiled filter goes into every prefetch of a hybrid query and the top
level; backends translate it mechanically and must not add or drop clauses.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from core.errors import EmptyScopeError
from core.types import Scope

# Payload field names shared by both backends and by the catalog oracle.
F_TENANT = "tenant"
F_ALLOW = "acl_allow"
F_DENY = "acl_deny"
F_SOURCE = "source"
F_DOC = "doc_key"
F_MODIFIED = "modified_ts"

KEYWORD_FIELDS = (F_TENANT, F_ALLOW, F_DENY, F_SOURCE, F_DOC)
FLOAT_FIELDS = (F_MODIFIED,)


@dataclass(frozen=True)
class Match:
    """``key`` holds any of ``values`` (for list payloads: any element does)."""

    key: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Range:
    key: str
    gte: float | None = None
    lt: float | None = None


Condition = Match | Range


@dataclass(frozen=True)
class CompiledFilter:
    """``must`` all hold; for each group in ``must_not``, not all of its conditions hold."""

    must: tuple[Condition, ...]
    must_not: tuple[tuple[Condition, ...], ...]


def compile_scope(
    scope: Scope,
    *,
    now: datetime | None = None,
    source_max_age_s: dict[str, int] | None = None,
) -> CompiledFilter:
    ent = scope.entitlements
    principals = tuple(sorted(ent.principals))
    if not ent.tenant:
        raise EmptyScopeError("scope has no tenant")
    now_ts = (now or datetime.now(timezone.utc)).timestamp()

    must: list[Condition] = [Match(F_TENANT, (ent.tenant,))]
    must_not: list[tuple[Condition, ...]] = []
    if scope.unrestricted_reason is None:
        if not principals:
            raise EmptyScopeError("caller has no principals; nothing is visible")
        must.append(Match(F_ALLOW, principals))
        must_not.append((Match(F_DENY, principals),))

    if scope.max_age_s is not None:
        must.append(Range(F_MODIFIED, gte=now_ts - scope.max_age_s))
    for source, max_age in sorted((source_max_age_s or {}).items()):
        must_not.append((Match(F_SOURCE, (source,)), Range(F_MODIFIED, lt=now_ts - max_age)))

    if scope.sources is not None:
        if not scope.sources:
            raise EmptyScopeError("source filter is empty; nothing can match")
        must.append(Match(F_SOURCE, tuple(sorted(scope.sources))))
    if scope.modified_after is not None or scope.modified_before is not None:
        must.append(
            Range(
                F_MODIFIED,
                gte=scope.modified_after.timestamp() if scope.modified_after else None,
                lt=scope.modified_before.timestamp() if scope.modified_before else None,
            )
        )
    return CompiledFilter(tuple(must), tuple(must_not))


def doc_filter(base: CompiledFilter, doc_key: str) -> CompiledFilter:
    """Narrow a compiled scope to one document (for get/chunk reads)."""
    return CompiledFilter((*base.must, Match(F_DOC, (doc_key,))), base.must_not)
