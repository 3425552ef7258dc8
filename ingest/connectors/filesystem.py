"""The folder source as a connector: a directory tree and its ``acl.toml`` (``ingest.sources``).

Everything ``FilesystemSource`` guarantees holds here (the root is never left, links out of it,
FIFOs and devices are refused, the manifest is read strictly and a bad one fails the run before
anything is written), because every stream builds a fresh ``FilesystemSource`` over the folder.

Identities: ``acl.toml`` already names Clearance principals (``user:alice@corp.example``,
``group:finance``, ``role:...``), so this connector's namespace is ``clearance`` and each
``SourceIdentity.name`` is the whole principal (``kind`` is ``user`` for ``user:`` principals,
``group`` for every other kind). The identity map passes them through unchanged after the
principal grammar check (``app.identity``).

Checkpoints (opaque to the engine, JSON here):

- content: ``{doc_id: [mtime_ns, size, sha256]}``: a file whose mtime and size are unchanged
  is not even read; one that was touched but holds the same bytes is not yielded;
- permissions: ``{doc_id: acl fingerprint}`` from the manifest: an ``acl.toml`` edit yields the
  files whose effective ACL changed, with their whole new ACL, and never their content.

Config: ``{"root": "/abs/folder", "batch_docs": 64 (optional), "max_file_bytes": N (optional)}``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path

from core.audit import acl_fingerprint
from core.errors import ClearanceError, ConfigError
from core.logging import Log
from core.types import Acl
from ingest.connectors.contract import Batch, ConnectorDocument, PermissionChange, SourceAcl, SourceIdentity
from ingest.sources import FilesystemSource, content_hash

NAMESPACE = "clearance"
log = Log("clearance.connectors.filesystem")


def identity_of(principal: str) -> SourceIdentity:
    """A Clearance principal as an identity of the ``clearance`` namespace."""
    if principal.startswith("user:"):
        return SourceIdentity("user", principal, NAMESPACE)
    return SourceIdentity("group", principal, NAMESPACE)


def source_acl(acl: Acl) -> SourceAcl:
    return SourceAcl(frozenset(identity_of(p) for p in acl.allow), frozenset(identity_of(p) for p in acl.deny))


def _load(checkpoint: str | None, what: str) -> dict[str, object]:
    if not checkpoint:
        return {}
    try:
        data = json.loads(checkpoint)
    except ValueError as exc:
        raise ConfigError(f"the stored {what} checkpoint is not this connector's (not JSON)", code="bad_checkpoint") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"the stored {what} checkpoint is not this connector's", code="bad_checkpoint")
    return data


class FilesystemConnector:
    """A folder with an optional ``acl.toml``; doc ids are POSIX paths under the root."""

    namespace = NAMESPACE

    def __init__(self, name: str, config: Mapping[str, object]) -> None:
        root = config.get("root")
        if not isinstance(root, str) or not root:
            raise ConfigError("the filesystem connector needs config 'root': an absolute folder path", code="invalid_source")
        unknown = set(config) - {"root", "batch_docs", "max_file_bytes", "tenant"}
        if unknown:
            raise ConfigError(f"unknown filesystem connector config keys: {', '.join(sorted(unknown))}",
                              code="invalid_source")
        self.name = name
        self.root = Path(root)
        batch = config.get("batch_docs", 64)
        limit = config.get("max_file_bytes")
        tenant = config.get("tenant")
        if not isinstance(batch, int) or batch < 1:
            raise ConfigError("batch_docs must be a positive integer", code="invalid_source")
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ConfigError("max_file_bytes must be a positive integer", code="invalid_source")
        self.batch_docs = batch
        self.max_file_bytes: int | None = limit
        self.skipped: list[tuple[str, str]] = []  # (file, code) left unread by the last documents() run
        self.tenant: str | None = tenant if isinstance(tenant, str) else None

    def _source(self) -> FilesystemSource:
        src = FilesystemSource(self.root, self.name, tenant=self.tenant)
        src.max_file_bytes = self.max_file_bytes
        return src

    # -- streams ----------------------------------------------------------------------------
    def documents(self, since: str | None) -> Iterator[Batch[ConnectorDocument]]:
        src = self._source()
        before = _load(since, "content")
        state: dict[str, object] = {k: v for k, v in before.items() if k in set(src.doc_ids())}
        items: list[ConnectorDocument] = []
        for rel, path in src.files():
            try:
                st = path.stat()
            except OSError:
                continue  # vanished since the listing: the next run's listing drops it
            old = before.get(rel)
            if isinstance(old, list) and len(old) == 3 and old[0] == st.st_mtime_ns and old[1] == st.st_size:
                continue
            try:
                doc = src.read(rel, path)
            except ClearanceError as exc:  # too large, vanished, swapped for a link: retried next run
                log.warning("connector.filesystem.skipped", source=self.name, code=exc.code)
                self.skipped.append((rel, exc.code))  # the engine reports it (count and the first ones)
                continue
            digest = content_hash(doc.content)
            state[rel] = [st.st_mtime_ns, st.st_size, digest]
            if isinstance(old, list) and len(old) == 3 and old[2] == digest:
                continue  # touched, same bytes
            items.append(ConnectorDocument(doc_id=rel, filename=doc.filename, content=doc.content,
                                           acl=source_acl(doc.acl), modified_at=doc.modified_at, uri=doc.uri,
                                           title=doc.title))
            if len(items) >= self.batch_docs:
                yield Batch(items, json.dumps(state, sort_keys=True))
                items = []
        yield Batch(items, json.dumps(state, sort_keys=True))

    def permissions(self, since: str | None) -> Iterator[Batch[PermissionChange]]:
        src = self._source()
        before = _load(since, "permissions")
        table = src.acl_table()
        state = {rel: acl_fingerprint(acl.allow, acl.deny) for rel, acl in table.items()}
        changes = [PermissionChange(rel, source_acl(acl)) for rel, acl in table.items() if before.get(rel) != state[rel]]
        for i in range(0, len(changes), self.batch_docs):
            part = changes[i:i + self.batch_docs]
            done = {c.doc_id for c in changes[:i + self.batch_docs]}
            # Not yet applied changes keep their old fingerprint (absent: none), so a crash replays them.
            cp = {rel: fp for rel, fp in state.items() if rel in done or before.get(rel) == fp}
            yield Batch(part, json.dumps(cp, sort_keys=True))
        if not changes:
            yield Batch([], json.dumps(state, sort_keys=True))

    def listing(self) -> list[str]:
        return self._source().doc_ids()

    def close(self) -> None:
        return None
