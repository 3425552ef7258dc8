"""The connector contract: what a third party implements to bring a system of record in.

A connector only *reads* its source. The engine (``app.connectors``) owns batching, retries,
the write path, write authorization, the identity map and the audit; a connector never sees the
index, the catalog or a principal of Clearance's grammar.

Three streams, each resumable from an opaque checkpoint the engine stores per source and
stream (``None``: from the beginning):

- ``documents(since)``: content that is new or changed since the checkpoint, with its ACL in the
  source's own identities (``SourceAcl``) and its provenance;
- ``permissions(since)``: ACL-only changes (a chmod, an ACL row, a folder share) that must be
  applied *without* re-reading or re-embedding the content;
- ``listing()``: the ids of every document the source holds now; the engine deletes what the
  catalog has and the listing lacks (under the mass-delete guard). A source with cheap tombstones
  may also yield them from ``deletions(since)``.

Each stream ends with the checkpoint to resume from: ``Batch.checkpoint`` after the items it
carries. The engine stores it only once every item before it is committed, so a crash replays
at most one batch (writes are idempotent by content hash).

Identities: every ``SourceIdentity`` carries the connector's declared ``namespace`` (``posix``,
``postgresql``, ``imap``, ...). The identity map (``app.identity``) turns them into principals;
one it cannot map is reported per source and grants nothing; an unmapped *deny* makes the
document private (fail closed: dropping a deny would widen access).

Discovery: Python entry points in the group ``clearance.connectors``; the entry point names a
``ConnectorFactory`` (usually the class), called with the source name and its config mapping.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import entry_points
from typing import Generic, Literal, Protocol, TypeVar, runtime_checkable

from core.errors import ConfigError

ENTRY_POINT_GROUP = "clearance.connectors"
IdentityKind = Literal["user", "group"]
T = TypeVar("T")


@dataclass(frozen=True)
class SourceIdentity:
    """One identity as the source names it: a POSIX user, a database role, a mail address."""

    kind: IdentityKind
    name: str
    namespace: str


@dataclass(frozen=True)
class SourceAcl:
    """Read access in the source's identities. Deny beats allow; empty allow means nobody."""

    allow: frozenset[SourceIdentity] = frozenset()
    deny: frozenset[SourceIdentity] = frozenset()


@dataclass(frozen=True)
class ConnectorDocument:
    """Content with its ACL and provenance. ``doc_id`` is stable for the life of the item in
    the source (a path, a primary key, a mailbox + UID validity + UID)."""

    doc_id: str
    filename: str  # its extension picks the parser (``.txt``, ``.md``, ``.pdf``, ``.eml``, ...)
    content: bytes
    acl: SourceAcl
    modified_at: datetime
    uri: str  # where a reader finds the original (provenance to cite)
    title: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PermissionChange:
    """The whole current ACL of one document (not a delta): applying it twice is harmless."""

    doc_id: str
    acl: SourceAcl


@dataclass(frozen=True)
class Batch(Generic[T]):
    """Items and the checkpoint that holds once they are all applied."""

    items: list[T]
    checkpoint: str | None


@runtime_checkable
class Connector(Protocol):
    """A read-only view of one system of record."""

    name: str  # the source's name in Clearance
    namespace: str  # the identity namespace of every SourceIdentity it yields

    def documents(self, since: str | None) -> Iterator[Batch[ConnectorDocument]]:
        """Content new or changed after ``since``, in batches, each with its checkpoint."""
        ...

    def permissions(self, since: str | None) -> Iterator[Batch[PermissionChange]]:
        """ACL-only changes after ``since``: never re-read content for these."""
        ...

    def listing(self) -> list[str]:
        """Every doc id the source holds now (the engine reconciles deletions from it)."""
        ...

    def close(self) -> None:
        """Release connections; called by the engine after each run."""
        ...


class ConnectorFactory(Protocol):
    def __call__(self, name: str, config: Mapping[str, object]) -> Connector: ...


def available() -> dict[str, ConnectorFactory]:
    """Every installed connector by its entry-point name."""
    found: dict[str, ConnectorFactory] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = ep.load()
    return found


def load(kind: str) -> ConnectorFactory:
    """The factory of connector ``kind``, or a ``ConfigError`` naming the installed ones."""
    matches = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == kind]
    if not matches:
        names = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
        raise ConfigError(f"no connector {kind!r} is installed (installed: {', '.join(names) or 'none'})",
                          code="unknown_connector")
    factory: ConnectorFactory = matches[0].load()
    return factory
