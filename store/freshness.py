"""Source freshness against each source's SLA (``ingest.source_sla_s``).

Definitions: a source's *lag* is now minus its last successful sync job or push (whichever is
later). A source is *stale* when it declares an SLA and its lag exceeds it, or it declares one
and never succeeded. A source without an SLA is never stale. Staleness only warns (``/readyz``
warnings, ``clearance_source_stale``, ``stale_sources`` in search answers); it never hides a
chunk (that is ``retrieval.source_max_age_s``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from store.catalog import Catalog, aware_utc, unavailable, utcnow


@dataclass(frozen=True)
class SourceStatus:
    name: str
    kind: str
    root: str | None
    last_success_at: datetime | None
    last_attempt_at: datetime | None
    last_error: str | None
    last_job_id: int | None
    sla_s: int | None
    lag_s: float | None  # None: never synced
    stale: bool
    documents: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "root": self.root,
            "last_success_at": self.last_success_at.isoformat() if self.last_success_at else None,
            "last_attempt_at": self.last_attempt_at.isoformat() if self.last_attempt_at else None,
            "last_error": self.last_error, "last_job_id": self.last_job_id, "sla_s": self.sla_s,
            "lag_s": round(self.lag_s, 3) if self.lag_s is not None else None, "stale": self.stale,
            "documents": self.documents,
        }

    def warning(self) -> str:
        if self.lag_s is None:
            return f"source {self.name!r} has never synced successfully (freshness SLA {self.sla_s} s)"
        return f"source {self.name!r} last synced {self.lag_s:.0f} s ago, beyond its freshness SLA of {self.sla_s} s"


def is_stale(sla_s: int | None, lag_s: float | None) -> bool:
    return sla_s is not None and (lag_s is None or lag_s > sla_s)


class Freshness:
    def __init__(self, catalog: Catalog, sla_s: Mapping[str, int]) -> None:
        self.catalog = catalog
        self.sla_s = dict(sla_s)

    def statuses(self, now: datetime | None = None) -> list[SourceStatus]:
        """Every source the catalog knows (or an SLA names), sorted by name."""
        now = now or utcnow()
        with unavailable("catalog"):
            rows = {r.name: r for r in self.catalog.source_rows()}
            last = self.catalog.last_success()
            docs = self.catalog.document_counts()
        out = []
        for name in sorted(set(rows) | set(last) | set(docs) | set(self.sla_s)):
            row = rows.get(name)
            when = last.get(name)
            lag = (now - when).total_seconds() if when is not None else None
            sla = self.sla_s.get(name)
            out.append(SourceStatus(
                name=name, kind=row.kind if row else ("filesystem" if name in last else "unknown"),
                root=row.root if row else None, last_success_at=when,
                last_attempt_at=aware_utc(row.last_attempt_at) if row else None,
                last_error=row.last_error if row else None, last_job_id=row.last_job_id if row else None,
                sla_s=sla, lag_s=lag, stale=is_stale(sla, lag), documents=docs.get(name, {}),
            ))
        return out

    def stale(self, sources: Iterable[str], now: datetime | None = None) -> list[SourceStatus]:
        """The stale ones among ``sources``; one small catalog read, only for sources with an SLA."""
        names = {s for s in sources if s in self.sla_s}
        if not names:
            return []
        now = now or utcnow()
        with unavailable("catalog"):
            last = self.catalog.last_success(names)
        out = []
        for name in sorted(names):
            when = last.get(name)
            lag = (now - when).total_seconds() if when is not None else None
            if is_stale(self.sla_s[name], lag):
                out.append(SourceStatus(name, "", None, when, None, None, None, self.sla_s[name], lag, True, {}))
        return out
