"""Field types and the base class shared by the request models and query parameters of the
routes: what arrives is refused with a 422 at the boundary when it cannot be stored or
compared, instead of failing deeper down as a 500 or a misleading 503."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, model_validator


def _to_utc(value: datetime) -> datetime:
    """Aware UTC; a naive value is taken to be UTC already (as ``store.catalog.as_utc`` does).

    Values that only exist in their own offset (``0001-01-01T00:00:00+01:00`` is year 0 in UTC,
    ``9999-12-31T23:59:59-01:00`` is year 10000) are refused here (422) instead of overflowing
    in the filter compiler or the catalog query (a 500).
    """
    try:
        utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        utc.timestamp()
    except (OverflowError, ValueError):
        raise ValueError("date-time is out of range once converted to UTC") from None
    return utc


UtcDateTime = Annotated[datetime, AfterValidator(_to_utc)]


def _has_lone_surrogate(value: Any) -> bool:
    """Whether any string in a parsed JSON value (keys included) holds a lone UTF-16 surrogate.

    JSON lets a client write ``"\\ud800"``; Python's parser turns it into a ``str`` that cannot
    be encoded as UTF-8, so the content hash, the embedder or the index would fail on it later.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


class RequestBody(BaseModel):
    """Base of every JSON request body: text must be valid Unicode (no lone surrogates), and an
    unknown field is a 422 naming it (``{"topk": 3}`` is refused, never silently ignored)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        if _has_lone_surrogate(data):
            raise ValueError("text must be valid Unicode (the body holds a lone surrogate such as \\ud800)")
        return data
