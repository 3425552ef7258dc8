"""The one owned schema of what goes into the index: ``ChunkPayload``.

Every module that writes, filters on or reads a chunk's payload goes through this module: the
writer builds a ``ChunkPayload`` and calls ``to_index``; the scope filter names fields with
``PayloadField``; readers call ``ChunkPayload.from_index``; the audit fingerprints the ACL with
``acl_of``. Renaming a field here renames it everywhere, and a test
(``tests/unit/test_payload_schema.py``) fails if any other module spells a field as a string.

The document key is ``<tenant>/<source>/<doc_id>``; ``doc_key`` is the only place it is
formatted, so a writer and a reader can never disagree on it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from core.types import Acl


class PayloadField(StrEnum):
    TENANT = "tenant"
    SOURCE = "source"
    DOC_ID = "doc_id"
    DOC_KEY = "doc_key"
    URI = "uri"
    TITLE = "title"
    SECTION = "section"
    PAGE = "page"
    ELEMENT_TYPES = "element_types"
    CHUNK_INDEX = "chunk_index"
    VERSION = "version"
    CONTENT_HASH = "content_hash"
    MODIFIED_AT = "modified_at"
    MODIFIED_TS = "modified_ts"
    INGESTED_AT = "ingested_at"
    ACL_ALLOW = "acl_allow"
    ACL_DENY = "acl_deny"
    SAMPLE_KEY = "sample_key"
    TEXT = "text"
    METADATA = "metadata"


# Fields with a payload index: keyword (exact match) and float (ranges).
KEYWORD_FIELDS: tuple[PayloadField, ...] = (
    PayloadField.TENANT, PayloadField.ACL_ALLOW, PayloadField.ACL_DENY, PayloadField.SOURCE, PayloadField.DOC_KEY,
)
FLOAT_FIELDS: tuple[PayloadField, ...] = (PayloadField.MODIFIED_TS, PayloadField.SAMPLE_KEY)
TENANT_FIELD = PayloadField.TENANT  # the engines' multi-tenancy hint goes on this index

# What a citation shows of a chunk (search hits and document reads).
PROVENANCE_FIELDS: tuple[PayloadField, ...] = (
    PayloadField.SOURCE, PayloadField.DOC_ID, PayloadField.URI, PayloadField.TITLE, PayloadField.SECTION,
    PayloadField.PAGE, PayloadField.VERSION, PayloadField.MODIFIED_AT, PayloadField.INGESTED_AT,
    PayloadField.CONTENT_HASH, PayloadField.CHUNK_INDEX, PayloadField.ELEMENT_TYPES,
)
DOCUMENT_FIELDS: tuple[PayloadField, ...] = tuple(
    f for f in PROVENANCE_FIELDS
    if f not in (PayloadField.SECTION, PayloadField.PAGE, PayloadField.CHUNK_INDEX, PayloadField.ELEMENT_TYPES)
)


def doc_key(tenant: str, source: str, doc_id: str) -> str:
    return f"{tenant}/{source}/{doc_id}"


# Sample keys are multiples of 1 / SAMPLE_STEPS: an upgrade writes one value to many points at once.
SAMPLE_STEPS = 1024


def sample_key(doc_key: str, chunk_index: int) -> float:
    """A chunk's fixed place in [0, 1), uniform and independent of its content and ACL: the chunks
    of any scope whose key is below ``f`` are a random ``f`` share of it, the same on every query
    (``scope_filter.sampled``, for BM25 statistics over a large scope)."""
    digest = hashlib.blake2b(f"{doc_key}#{chunk_index}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") % SAMPLE_STEPS) / SAMPLE_STEPS


def acl_fields(acl: Acl) -> dict[str, list[str]]:
    """The payload fields an ACL-only update writes (no other field changes)."""
    return {PayloadField.ACL_ALLOW.value: sorted(acl.allow), PayloadField.ACL_DENY.value: sorted(acl.deny)}


def descriptive_fields(*, uri: str, title: str, modified_at: datetime,
                       metadata: Mapping[str, object] | None) -> dict[str, object]:
    """The payload fields a metadata-only update writes (same content: vectors, text and ACL
    untouched). Dates as ``ChunkPayload.to_index`` writes them, so date filters see the new one."""
    F = PayloadField
    return {F.URI.value: uri, F.TITLE.value: title, F.MODIFIED_AT.value: modified_at.isoformat(),
            F.MODIFIED_TS.value: modified_at.timestamp(), F.METADATA.value: dict(metadata or {})}


def acl_of(raw: Mapping[str, object]) -> Acl:
    """The ACL a stored payload holds (the one the engine filtered with)."""
    allow = raw.get(PayloadField.ACL_ALLOW) or []
    deny = raw.get(PayloadField.ACL_DENY) or []
    assert isinstance(allow, (list, tuple)) and isinstance(deny, (list, tuple))
    return Acl(frozenset(str(p) for p in allow), frozenset(str(p) for p in deny))


@dataclass(frozen=True)
class ChunkPayload:
    """One chunk as the index stores it."""

    tenant: str
    source: str
    doc_id: str
    uri: str
    title: str
    section: str
    page: int | None
    element_types: tuple[str, ...]
    chunk_index: int
    version: str
    content_hash: str
    modified_at: datetime
    ingested_at: datetime
    acl: Acl
    text: str
    metadata: Mapping[str, object] | None = None  # typed per the source contract (ingest.contracts)

    @property
    def doc_key(self) -> str:
        return doc_key(self.tenant, self.source, self.doc_id)

    def to_index(self) -> dict[str, object]:
        F = PayloadField
        out: dict[str, object] = {
            F.TENANT: self.tenant, F.SOURCE: self.source, F.DOC_ID: self.doc_id, F.DOC_KEY: self.doc_key,
            F.URI: self.uri, F.TITLE: self.title, F.SECTION: self.section, F.PAGE: self.page,
            F.ELEMENT_TYPES: list(self.element_types), F.CHUNK_INDEX: self.chunk_index, F.VERSION: self.version,
            F.CONTENT_HASH: self.content_hash, F.MODIFIED_AT: self.modified_at.isoformat(),
            F.MODIFIED_TS: self.modified_at.timestamp(), F.INGESTED_AT: self.ingested_at.isoformat(),
            **acl_fields(self.acl), F.SAMPLE_KEY: sample_key(self.doc_key, self.chunk_index), F.TEXT: self.text,
        }
        if self.metadata:
            out[F.METADATA] = dict(self.metadata)
        return {str(k): v for k, v in out.items()}

    @classmethod
    def from_index(cls, raw: Mapping[str, object]) -> ChunkPayload:
        F = PayloadField
        page = raw.get(F.PAGE)
        metadata = raw.get(F.METADATA)
        return cls(
            tenant=str(raw.get(F.TENANT) or ""), source=str(raw.get(F.SOURCE) or ""),
            doc_id=str(raw.get(F.DOC_ID) or ""), uri=str(raw.get(F.URI) or ""), title=str(raw.get(F.TITLE) or ""),
            section=str(raw.get(F.SECTION) or ""), page=int(page) if isinstance(page, (int, float)) else None,
            element_types=tuple(str(t) for t in _list(raw.get(F.ELEMENT_TYPES))),
            chunk_index=int(_num(raw.get(F.CHUNK_INDEX))), version=str(raw.get(F.VERSION) or ""),
            content_hash=str(raw.get(F.CONTENT_HASH) or ""),
            modified_at=_date(raw.get(F.MODIFIED_AT)), ingested_at=_date(raw.get(F.INGESTED_AT)),
            acl=acl_of(raw), text=str(raw.get(F.TEXT) or ""),
            metadata={str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, Mapping) else None,
        )

    def provenance(self, fields: tuple[PayloadField, ...] = PROVENANCE_FIELDS) -> dict[str, object]:
        """Citation fields as the API shows them (dates as ISO strings)."""
        values: dict[PayloadField, object] = {
            PayloadField.SOURCE: self.source, PayloadField.DOC_ID: self.doc_id, PayloadField.URI: self.uri,
            PayloadField.TITLE: self.title, PayloadField.SECTION: self.section, PayloadField.PAGE: self.page,
            PayloadField.VERSION: self.version, PayloadField.MODIFIED_AT: self.modified_at.isoformat(),
            PayloadField.INGESTED_AT: self.ingested_at.isoformat(), PayloadField.CONTENT_HASH: self.content_hash,
            PayloadField.CHUNK_INDEX: self.chunk_index, PayloadField.ELEMENT_TYPES: list(self.element_types),
        }
        return {f.value: values[f] for f in fields}


def _list(value: object) -> list[object]:
    return list(value) if isinstance(value, (list, tuple)) else []


def _num(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) else 0.0


def _date(value: object) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        return datetime.fromisoformat(value)
    return datetime.fromtimestamp(0).astimezone()
