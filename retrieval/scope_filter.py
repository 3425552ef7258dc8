"""The one place that turns a ``Scope`` into an index filter.

How conditions combine (every clause is ANDed):

1. ``tenant`` equals the caller's tenant. Always, even for unrestricted (admin/eval) scopes.
2. ACL allow: the chunk's ``acl_allow`` contains ANY of the caller's principals.
3. ACL deny: the chunk's ``acl_deny`` contains NONE of the caller's principals (deny beats
   allow, because it is a separate ANDed clause).
4. Freshness: ``modified_ts >= now - max_age`` when the query sets ``max_age``; and for every
   source with a configured maximum age, NOT (source is that source AND older than its cutoff).
5. Caller filters only narrow: ``source`` any-of the requested sources, modified date range.
6. Metadata filters (``metadata_conditions``) only narrow too: each is one more ANDed ``must``
   clause on ``metadata.<field>`` (equality / any-of, or a numeric ``[gte, lt)`` range), allowed
   only on fields a source contract declares (``ingest.contracts`` settings), with the value type
   the contract declares; anything else is an ``InvalidRequestError`` (422) before any index is
   touched. They are appended to a compiled scope and can never remove one of its clauses.

An empty principal set raises ``EmptyScopeError`` here, before anything reaches an index, so
an ACL condition with an empty any-of list (which some transports read as "no condition") is
never produced. The compiled filter goes into every prefetch of a hybrid query and the top
level; backends translate it mechanically and must not add or drop clauses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from core.errors import EmptyScopeError, InvalidRequestError
from core.types import Scope
from retrieval.payload import SAMPLE_STEPS, PayloadField

F_TENANT = PayloadField.TENANT
F_ALLOW = PayloadField.ACL_ALLOW
F_DENY = PayloadField.ACL_DENY
F_SOURCE = PayloadField.SOURCE
F_DOC = PayloadField.DOC_KEY
F_MODIFIED = PayloadField.MODIFIED_TS
F_SAMPLE = PayloadField.SAMPLE_KEY


@dataclass(frozen=True)
class MetadataKey:
    """A declared metadata field, stored under ``metadata.<name>`` in the payload."""

    name: str

    @property
    def value(self) -> str:
        return f"{PayloadField.METADATA.value}.{self.name}"


@dataclass(frozen=True)
class Match:
    """``key`` holds any of ``values`` (for list payloads: any element does)."""

    key: PayloadField | MetadataKey
    values: tuple[str, ...] | tuple[int, ...]


@dataclass(frozen=True)
class Range:
    key: PayloadField | MetadataKey
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
    now_ts = (now or datetime.now(UTC)).timestamp()

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


def tenant_filter(tenant: str) -> CompiledFilter:
    """Every point of one tenant: for corpus statistics only (IDF), never for returning points."""
    if not tenant:
        raise EmptyScopeError("scope has no tenant")
    return CompiledFilter((Match(F_TENANT, (tenant,)),), ())


def empty_corpus(base: CompiledFilter) -> CompiledFilter:
    """A part of the scope no point is in (no document key is empty). As a BM25 IDF corpus it
    weighs every term alike (no statistics at all), at no cost: for lookups whose scores must
    depend on no other document and need no IDF (``SearchService._identifiers_first``)."""
    return doc_filter(base, "")


def sampled(base: CompiledFilter, share: float) -> CompiledFilter:
    """A fixed random part of the scope holding about ``share`` of it (the chunks whose sample key
    is below it, ``payload.sample_key``): a subset, so statistics over it depend on no chunk
    outside the scope. For corpus statistics only (IDF), never for returning points."""
    if not 0.0 < share <= 1.0:
        raise ValueError(f"sample share must be in (0, 1], got {share}")
    steps = max(1, math.ceil(share * SAMPLE_STEPS))  # keys are multiples of 1 / SAMPLE_STEPS
    if steps >= SAMPLE_STEPS:
        return base
    return CompiledFilter((*base.must, Range(F_SAMPLE, lt=steps / SAMPLE_STEPS)), base.must_not)


def doc_filter(base: CompiledFilter, doc_key: str) -> CompiledFilter:
    """Narrow a compiled scope to one document (for get/chunk reads)."""
    return CompiledFilter((*base.must, Match(F_DOC, (doc_key,))), base.must_not)


# -- metadata filters ---------------------------------------------------------------------------

MetadataValue = str | int | float | bool


@dataclass(frozen=True)
class MetadataFilter:
    """A caller's condition on one metadata field: equal to any of ``any_of``, or in ``[gte, lt)``."""

    field: str
    any_of: tuple[MetadataValue, ...] = ()
    gte: float | str | None = None  # a number, or an ISO 8601 date(-time) for date fields
    lt: float | str | None = None


def parse_metadata_filters(raw: Mapping[str, object]) -> tuple[MetadataFilter, ...]:
    """``{"region": "emea", "tier": ["gold", "silver"], "amount": {"gte": 10, "lt": 100},
    "signed": {"gte": "2024-01-01"}}``: a scalar is equality, a list any-of, an object a range
    (numbers, or ISO 8601 dates for date fields). Malformed shapes are a 422."""
    out: list[MetadataFilter] = []
    for name, value in sorted(raw.items()):
        if isinstance(value, Mapping):
            extra = set(value) - {"gte", "lt"}
            bounds = [value.get("gte"), value.get("lt")]
            if extra or not any(b is not None for b in bounds) or not all(
                    b is None or isinstance(b, str) or (isinstance(b, (int, float)) and not isinstance(b, bool))
                    for b in bounds):
                raise InvalidRequestError(f"metadata.{name}: a range is {{\"gte\": number, \"lt\": number}}")
            out.append(MetadataFilter(name, gte=_bound(value.get("gte")), lt=_bound(value.get("lt"))))
        elif isinstance(value, list):
            if not value or not all(isinstance(v, (str, int, float, bool)) for v in value):
                raise InvalidRequestError(f"metadata.{name}: any-of needs a non-empty list of scalars")
            out.append(MetadataFilter(name, any_of=tuple(value)))
        elif isinstance(value, (str, int, float, bool)):
            out.append(MetadataFilter(name, any_of=(value,)))
        else:
            raise InvalidRequestError(f"metadata.{name}: expected a value, a list of values or a range")
    return tuple(out)


def _bound(v: object) -> float | str | None:
    if isinstance(v, str):
        return v
    return float(v) if isinstance(v, (int, float)) else None


def _date_bound(name: str, v: float | str | None) -> float | None:
    if v is None:
        return None
    if not isinstance(v, str):
        raise InvalidRequestError(f"metadata.{name} is a date: bounds are ISO 8601 dates")
    try:
        dt = datetime.fromisoformat(v.strip())
    except ValueError:
        raise InvalidRequestError(f"metadata.{name}: {v!r} is not an ISO 8601 date") from None
    return (dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt).timestamp()


def metadata_conditions(filters: tuple[MetadataFilter, ...], declared: Mapping[str, str]) -> tuple[Condition, ...]:
    """One ``must`` condition per filter, checked against the declared field types
    (``declared_metadata``); undeclared fields and type mismatches are a 422."""
    out: list[Condition] = []
    for f in filters:
        kind = declared.get(f.field)
        if kind is None:
            raise InvalidRequestError(f"metadata.{f.field} is not a declared metadata field")
        key = MetadataKey(f.field)
        if f.gte is not None or f.lt is not None:
            if kind == "date":  # stored as epoch seconds (ingest.contracts.typed_metadata)
                out.append(Range(key, gte=_date_bound(f.field, f.gte), lt=_date_bound(f.field, f.lt)))
                continue
            if kind not in ("int", "float"):
                raise InvalidRequestError(f"metadata.{f.field} is {kind}: ranges need an int, float or date field")
            if isinstance(f.gte, str) or isinstance(f.lt, str):
                raise InvalidRequestError(f"metadata.{f.field} is {kind}: range bounds are numbers")
            out.append(Range(key, gte=f.gte, lt=f.lt))
            continue
        if kind in ("str", "list"):
            if not all(isinstance(v, str) for v in f.any_of):
                raise InvalidRequestError(f"metadata.{f.field} holds strings")
            out.append(Match(key, tuple(str(v) for v in f.any_of)))
        elif kind == "bool":
            if not all(isinstance(v, bool) for v in f.any_of):
                raise InvalidRequestError(f"metadata.{f.field} holds true or false")
            out.append(Match(key, tuple(bool_text(bool(v)) for v in f.any_of)))
        elif kind == "int":
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in f.any_of):
                raise InvalidRequestError(f"metadata.{f.field} holds integers")
            out.append(Match(key, tuple(int(v) for v in f.any_of)))
        else:
            raise InvalidRequestError(f"metadata.{f.field} is {kind}: filter it with a range")
    return tuple(out)


def with_metadata(base: CompiledFilter, conditions: tuple[Condition, ...]) -> CompiledFilter:
    """Narrow a compiled scope by metadata conditions (appended, never replacing a clause)."""
    return CompiledFilter((*base.must, *conditions), base.must_not)


def bool_text(value: bool) -> str:
    """Booleans are stored and matched as "true"/"false" (engines match keywords and integers)."""
    return "true" if value else "false"
