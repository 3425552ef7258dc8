"""Typed results of the Clearance client: frozen dataclasses built from the API's JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


def _date(value: object) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


@dataclass(frozen=True)
class Provenance:
    """What to cite: where the chunk comes from and how fresh it is."""

    source: str
    doc_id: str
    uri: str = ""
    title: str = ""
    section: str = ""
    page: int | None = None
    version: str = ""
    modified_at: datetime | None = None
    ingested_at: datetime | None = None
    chunk_index: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Provenance:
        return cls(source=str(d.get("source", "")), doc_id=str(d.get("doc_id", "")), uri=str(d.get("uri") or ""),
                   title=str(d.get("title") or ""), section=str(d.get("section") or ""), page=d.get("page"),
                   version=str(d.get("version") or ""), modified_at=_date(d.get("modified_at")),
                   ingested_at=_date(d.get("ingested_at")), chunk_index=d.get("chunk_index"), raw=dict(d))


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    text: str
    snippet: str
    provenance: Provenance
    explain: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Hit:
        return cls(id=d["id"], score=float(d["score"]), text=d.get("text", ""), snippet=d.get("snippet", ""),
                   provenance=Provenance.from_json(d.get("provenance") or {}), explain=d.get("explain"))


@dataclass(frozen=True)
class DocumentHits:
    """One document of a ``group_by="document"`` answer, with its best chunks."""

    source: str
    doc_id: str
    title: str
    uri: str
    score: float
    hits: list[Hit]

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> DocumentHits:
        return cls(source=d["source"], doc_id=d["doc_id"], title=d.get("title", ""), uri=d.get("uri", ""),
                   score=float(d["score"]), hits=[Hit.from_json(h) for h in d.get("hits", [])])


@dataclass(frozen=True)
class SearchPage:
    hits: list[Hit]
    documents: list[DocumentHits] | None
    next_cursor: str | None
    mode: str
    took_ms: float
    degraded: bool
    low_confidence: bool | None
    warnings: list[str]
    stale_sources: list[str]

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SearchPage:
        docs = d.get("documents")
        return cls(hits=[Hit.from_json(h) for h in d.get("hits", [])],
                   documents=[DocumentHits.from_json(x) for x in docs] if docs is not None else None,
                   next_cursor=d.get("next_cursor"), mode=d.get("mode", ""), took_ms=float(d.get("took_ms", 0.0)),
                   degraded=bool(d.get("degraded")), low_confidence=d.get("low_confidence"),
                   warnings=list(d.get("warnings", [])), stale_sources=list(d.get("stale_sources", [])))


@dataclass(frozen=True)
class DocumentChunk:
    id: str
    chunk_index: int
    text: str
    section: str = ""
    page: int | None = None


@dataclass(frozen=True)
class Document:
    source: str
    doc_id: str
    provenance: Provenance
    chunks: list[DocumentChunk]
    stale_sources: list[str]

    @property
    def text(self) -> str:
        return "\n\n".join(c.text for c in self.chunks)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Document:
        prov = {"source": d.get("source"), "doc_id": d.get("doc_id"), **(d.get("provenance") or {})}
        return cls(source=d["source"], doc_id=d["doc_id"], provenance=Provenance.from_json(prov),
                   chunks=[DocumentChunk(c["id"], int(c.get("chunk_index", 0)), c.get("text", ""),
                                         c.get("section") or "", c.get("page")) for c in d.get("chunks", [])],
                   stale_sources=list(d.get("stale_sources", [])))


@dataclass(frozen=True)
class WhoAmI:
    subject: str
    issuer: str
    tenant: str
    principals: list[str]
    scopes: list[str]

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> WhoAmI:
        return cls(d["subject"], d["issuer"], d["tenant"], list(d["principals"]), list(d["scopes"]))
