"""What an audit event says, and the digests in it. Pure functions; storage is ``store.audit``.

Definitions (the README's "Operations" section repeats them for auditors):

- ``principals_hash``: SHA-256 of the caller's sorted principals joined by newlines. Unkeyed, so
  anyone holding a principal set can recompute it and find the events made with that set.
- ``query_hash``: HMAC-SHA-256 of the query text (as searched: stripped) keyed with the
  deployment's salt (``audit.query_salt``, else a random salt kept in the catalog). Keyed so
  that low-entropy queries cannot be reversed by hashing a dictionary without the salt.
- ACL fingerprint of a chunk: the first 16 hex digits of SHA-256 over its canonical ACL
  ``{"allow": sorted, "deny": sorted}`` exactly as the index held it when the engine answered,
  i.e. the ACL the permission filter was evaluated against.
- ``acl_version`` of an event: the first 32 hex digits of SHA-256 over the sorted lines
  ``<chunk id>:<ACL fingerprint>`` of every chunk returned; ``None`` when nothing was returned.
  It is content-derived rather than a counter so that API processes and ingestion workers
  never need to agree on a sequence, and it is verifiable: recompute the fingerprint of a
  document's ACL from the catalog to tell whether a past read happened under that ACL.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

AuditAction = Literal["search", "document", "count"]


def principals_hash(principals: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(sorted(principals)).encode("utf-8")).hexdigest()


def query_hash(salt: bytes, query: str) -> str:
    return hmac.new(salt, query.encode("utf-8"), hashlib.sha256).hexdigest()


def acl_fingerprint(allow: Iterable[str], deny: Iterable[str]) -> str:
    canonical = json.dumps({"allow": sorted(allow), "deny": sorted(deny)}, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def acl_version(chunks: Iterable[SeenChunk]) -> str | None:
    lines = sorted(f"{c.chunk_id}:{c.acl}" for c in chunks)
    if not lines:
        return None
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class SeenChunk:
    """One chunk an answer handed out: where it came from, which version, under which ACL."""

    chunk_id: str
    source: str
    doc_id: str
    version: str
    acl: str  # ACL fingerprint

    def as_dict(self) -> dict[str, str]:
        return {"id": self.chunk_id, "source": self.source, "doc_id": self.doc_id, "version": self.version,
                "acl": self.acl}


@dataclass(frozen=True)
class AuditEvent:
    """One search or document read, as recorded. ``query`` is the raw text; the store hashes it
    and keeps the text only when ``audit.store_raw_query`` is on."""

    at: datetime
    request_id: str
    action: AuditAction
    status: int
    issuer: str
    subject: str
    tenant: str
    principals: frozenset[str]
    query: str | None
    params: dict[str, Any]
    chunks: tuple[SeenChunk, ...]
    latency_ms: float
    degraded: bool = False
    stale_sources: tuple[str, ...] = field(default_factory=tuple)

    @property
    def acl_version(self) -> str | None:
        return acl_version(self.chunks)
