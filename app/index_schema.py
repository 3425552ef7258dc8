"""The index's schema version: stored in the index itself, checked whenever a process opens it.

Version 1 is the layout of 0.1.0 and of this release (the ``dense`` and ``bm25`` vectors, the
``ChunkPayload`` fields and their payload indexes). Bump ``INDEX_SCHEMA_VERSION`` with any change
that needs the existing points rewritten (another vector, a renamed payload field, another BM25
tokenization): a process then refuses to serve an index of another version, with a message that
says so, instead of answering wrongly, and `clearance reindex` rebuilds it from the catalog's
recorded sources.

Where the version lives:
- Qdrant Edge: ``clearance-index.json`` inside the shard folder, so it travels with every copy
  and backup of the shard (Edge ignores files it does not own);
- Qdrant server: the collection's own metadata (``clearance_index_schema``).
An index without a version is either new (it gets the current one) or written by 0.1.0, before
versions were stored (it gets 1, the 0.1.0 layout).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from core.errors import ConfigError
from core.settings import Settings
from retrieval.edge_index import SCHEMA_MARKER
from retrieval.index import ChunkIndex
from retrieval.server_index import SCHEMA_METADATA_KEY

INDEX_SCHEMA_VERSION = 1
LEGACY_VERSION = 1  # what an index written by 0.1.0 (no stored version) holds
MARKER_FILE = SCHEMA_MARKER
METADATA_KEY = SCHEMA_METADATA_KEY


class IndexSchemaError(ConfigError):
    """The index holds another schema version than this release reads and writes."""

    code = "index_schema_mismatch"


def uses_server(settings: Settings) -> bool:
    return bool(settings.qdrant.url or settings.qdrant.local_path)


def marker_path(edge_dir: Path) -> Path:
    return edge_dir / MARKER_FILE


def read_marker(edge_dir: Path) -> int | None:
    path = marker_path(edge_dir)
    if not path.exists():
        return None
    return int(json.loads(path.read_text())["schema"])


def write_marker(edge_dir: Path, version: int) -> None:
    path = marker_path(edge_dir)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"schema": version}) + "\n")
    os.replace(tmp, path)


def read_version(settings: Settings, index: ChunkIndex) -> int | None:
    return index.schema_version()


def write_version(settings: Settings, index: ChunkIndex, version: int) -> None:
    index.set_schema_version(version)


def check_index_schema(settings: Settings, index: ChunkIndex) -> int:
    """The index's schema version, recorded first when it has none; ``IndexSchemaError`` when
    it is not the one this release reads and writes."""
    stored = read_version(settings, index)
    if stored is None:
        stored = INDEX_SCHEMA_VERSION if index.size() == 0 else LEGACY_VERSION
        write_version(settings, index, stored)
    if stored != INDEX_SCHEMA_VERSION:
        where = (f"collection {settings.qdrant.collection!r}" if uses_server(settings)
                 else f"the Edge shard at {settings.storage.edge_path}")
        newer = "a newer release" if stored > INDEX_SCHEMA_VERSION else "an older release"
        raise IndexSchemaError(
            f"{where} holds index schema version {stored} (written by {newer}); this release reads and writes "
            f"version {INDEX_SCHEMA_VERSION}: rebuild it with `clearance reindex`, or run the release that wrote it")
    return stored
