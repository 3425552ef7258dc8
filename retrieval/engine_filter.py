"""The one translation of a ``CompiledFilter`` into an engine's filter objects.

Both backends (Qdrant Edge and qdrant-client) spell filters with the same shape: a filter of
``must`` conditions and ``must_not`` sub-filters, conditions being "field matches any of" or
"field in range". Each backend supplies only its constructors (a ``FilterDialect``); the
structure, and so the meaning, is written once here and cannot drift between them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from retrieval.scope_filter import CompiledFilter, Condition, Match

C = TypeVar("C")  # an engine's condition type
F = TypeVar("F")  # an engine's filter type


@dataclass(frozen=True)
class FilterDialect(Generic[C, F]):
    match_any: Callable[[str, list[str | int]], C]  # strings, or integers (int metadata fields)
    range: Callable[[str, float | None, float | None], C]
    filter: Callable[[list[C], list[F]], F]


def homogeneous(values: list[str | int]) -> list[str] | list[int]:
    """The engines match a field against strings or against integers, never a mix."""
    ints = [v for v in values if isinstance(v, int)]
    if len(ints) == len(values):
        return ints
    if ints:
        raise ValueError("a match list mixes strings and integers")
    return [str(v) for v in values]


def translate(flt: CompiledFilter, dialect: FilterDialect[C, F]) -> F:
    def condition(c: Condition) -> C:
        if isinstance(c, Match):
            return dialect.match_any(c.key.value, list(c.values))
        return dialect.range(c.key.value, c.gte, c.lt)

    return dialect.filter(
        [condition(c) for c in flt.must],
        [dialect.filter([condition(c) for c in group], []) for group in flt.must_not],
    )
