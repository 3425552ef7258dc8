"""Index payloads for fixtures, tests and benchmarks, built only through the owned schema
(``retrieval.payload.ChunkPayload``): a fixture can never drift from what the writer stores."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from core.types import Acl
from retrieval.payload import ChunkPayload


def chunk_payload(*, tenant: str, source: str, doc_id: str, chunk_index: int = 0, text: str = "",
                  allow: Iterable[str] = (), deny: Iterable[str] = (), modified_ts: float = 0.0,
                  title: str = "", version: str = "v1") -> dict[str, object]:
    modified = datetime.fromtimestamp(modified_ts, UTC)
    return ChunkPayload(
        tenant=tenant, source=source, doc_id=doc_id, uri=f"test://{source}/{doc_id}", title=title, section="",
        page=None, element_types=(), chunk_index=chunk_index, version=version, content_hash="", modified_at=modified,
        ingested_at=modified, acl=Acl(frozenset(allow), frozenset(deny)), text=text,
    ).to_index()
