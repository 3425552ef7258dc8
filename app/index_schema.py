"""The index's schema version: stored in the index itself, checked whenever a process opens it.

Version 1 is the layout of 0.1.0 (the ``dense`` and ``bm25`` vectors, the ``ChunkPayload``
fields and their payload indexes). Version 2 adds each chunk's ``sample_key`` (sampled BM25
statistics over large scopes, ``scope_filter.sampled``); ``UPGRADES`` writes it into a version 1
index in place, from the payload already there.

Bump ``INDEX_SCHEMA_VERSION`` with any change that needs the existing points rewritten (another
vector, a renamed payload field, another BM25 tokenization): a process then refuses to serve an
index of another version, with a message that says so, instead of answering wrongly. An older
index is upgraded in place where a step in ``UPGRADES`` can do it (on open when
``db.auto_migrate`` holds, the embedded default, else by `clearance db upgrade`); otherwise
`clearance reindex` rebuilds it from the catalog's recorded sources.

Where the version lives:
- Qdrant Edge: ``clearance-index.json`` inside the shard folder, so it travels with every copy
  and backup of the shard (Edge ignores files it does not own);
- Qdrant server: the collection's own metadata (``clearance_index_schema``).
An index without a version is either new (it gets the current one) or written by 0.1.0, before
versions were stored (it gets 1, the 0.1.0 layout).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from core.errors import ConfigError
from core.settings import Settings
from retrieval.edge_index import SCHEMA_MARKER, read_schema_marker, write_schema_marker
from retrieval.index import ChunkIndex
from retrieval.payload import PayloadField, sample_key
from retrieval.scope_filter import CompiledFilter, Range
from retrieval.server_index import SCHEMA_METADATA_KEY

INDEX_SCHEMA_VERSION = 2
LEGACY_VERSION = 1  # what an index written by 0.1.0 (no stored version) holds
MARKER_FILE = SCHEMA_MARKER
# the Edge shard's version file, readable without opening the shard (``clearance db status``)
read_marker = read_schema_marker
write_marker = write_schema_marker
METADATA_KEY = SCHEMA_METADATA_KEY


class IndexSchemaError(ConfigError):
    """The index holds another schema version than this release reads and writes."""

    code = "index_schema_mismatch"


def uses_server(settings: Settings) -> bool:
    return bool(settings.qdrant.url or settings.qdrant.local_path)


def read_version(settings: Settings, index: ChunkIndex) -> int | None:
    return index.schema_version()


def write_version(settings: Settings, index: ChunkIndex, version: int) -> None:
    index.set_schema_version(version)


def _add_sample_keys(index: ChunkIndex, batch: int = 16_384) -> int:
    """Version 1 -> 2: every point without a ``sample_key`` gets the one its writer would give it
    (from its ``doc_key`` and ``chunk_index``; from its id where those are missing). Resumable:
    each pass reads only points still without one. Returns how many points it wrote."""
    missing = CompiledFilter((), ((Range(PayloadField.SAMPLE_KEY, gte=0.0),),))
    written = 0
    previous: set[str] = set()
    while hits := index.scroll(missing, batch):
        ids = {h.id for h in hits}
        if ids & previous:  # a write that did not take: stop rather than loop
            raise IndexSchemaError(f"index upgrade to version 2 made no progress: {len(ids & previous)} points kept no "
                                   "sample_key after it was written; nothing was lost, run the upgrade again or "
                                   "`clearance reindex`")
        groups: dict[float, list[str]] = defaultdict(list)
        for h in hits:
            dk, ci = h.payload.get(PayloadField.DOC_KEY), h.payload.get(PayloadField.CHUNK_INDEX)
            numbered = isinstance(ci, (int, float)) and not isinstance(ci, bool) and float(ci).is_integer()
            key = sample_key(dk, int(ci)) if isinstance(dk, str) and numbered else sample_key(h.id, 0)  # type: ignore[arg-type]
            groups[key].append(h.id)
        # keys take SAMPLE_STEPS values: one update per value, all of a pass in one request
        index.set_payloads([(group, {PayloadField.SAMPLE_KEY.value: key}) for key, group in groups.items()])
        written += len(hits)
        previous = ids
    return written


# from version -> the step that takes an index to the next version, in place
UPGRADES: dict[int, Callable[[ChunkIndex], int]] = {1: _add_sample_keys}


def upgrade_index(index: ChunkIndex, stored: int) -> int:
    """Take an index from version ``stored`` to this release's, step by step, recording each
    version reached (a crash resumes from there); returns the points rewritten."""
    written = 0
    for version in range(stored, INDEX_SCHEMA_VERSION):
        written += UPGRADES[version](index)
        index.flush()
        index.set_schema_version(version + 1)
    return written


def check_index_schema(settings: Settings, index: ChunkIndex, *, upgrade: bool | None = None) -> int:
    """The index's schema version, recorded first when it has none; an older index is upgraded
    in place when ``upgrade`` holds (default: ``db.auto_migrate``); ``IndexSchemaError`` when it
    is not the one this release reads and writes."""
    stored = read_version(settings, index)
    if stored is None:
        stored = INDEX_SCHEMA_VERSION if index.size() == 0 else LEGACY_VERSION
        write_version(settings, index, stored)
    upgradable = stored < INDEX_SCHEMA_VERSION and all(v in UPGRADES for v in range(stored, INDEX_SCHEMA_VERSION))
    if upgradable and (settings.auto_migrate() if upgrade is None else upgrade):
        upgrade_index(index, stored)
        stored = INDEX_SCHEMA_VERSION
    if stored != INDEX_SCHEMA_VERSION:
        where = (f"collection {settings.qdrant.collection!r}" if uses_server(settings)
                 else f"the Edge shard at {settings.storage.edge_path}")
        newer = "a newer release" if stored > INDEX_SCHEMA_VERSION else "an older release"
        fix = ("upgrade it in place with `clearance db upgrade`" if upgradable
               else "rebuild it with `clearance reindex`, or run the release that wrote it")
        raise IndexSchemaError(
            f"{where} holds index schema version {stored} (written by {newer}); this release reads and writes "
            f"version {INDEX_SCHEMA_VERSION}: {fix}")
    return stored
