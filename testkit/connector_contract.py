"""The connector contract suite: one set of checks every connector passes (``ingest.connectors.contract``).

Each connector owner writes a *harness* (``ConnectorHarness``) that drives a real test source
(a folder, a database, a mailbox) and a module ``tests/contract/test_connector_<name>.py``:

    class TestPosixConnector(ConnectorContract):
        READERS = (("user", "alice"), ("user", "bob"), ("group", "staff"))  # names the source knows

        @pytest.fixture
        def harness(self, tmp_path: Path) -> Iterator[ConnectorHarness]:
            h = PosixHarness(tmp_path)
            yield h
            h.close()

The checks are plain functions too (``CHECKS``), for a module that prefers to parametrize.

What the checks hold a connector to (the engine relies on each):

- a full read (``documents(None)``) yields every document once, its readers in the ACL, every
  identity in the connector's declared namespace, with provenance (uri, modified_at, filename);
- the checkpoint a stream ends with resumes it: nothing new after a full read, only the edited
  document after an edit, and a checkpoint works across connector instances (the engine builds a
  fresh connector for every run);
- a permission-only change comes from ``permissions(cp)`` with the whole new ACL (a removed reader
  is gone) and *not* from ``documents(cp)`` (a permission sync never re-embeds);
- ``listing()`` holds every present document and drops a removed one;
- two full reads agree (same ids, content and ACLs).

Texts the checks pass to ``add``/``edit`` are short ASCII words; a connector must carry them
recognisably in ``ConnectorDocument.content`` (the harness may wrap them, e.g. in a mail body).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, TypeVar

import pytest

from ingest.connectors.contract import (
    Batch,
    Connector,
    ConnectorDocument,
    IdentityKind,
    PermissionChange,
    SourceAcl,
    SourceIdentity,
)

T = TypeVar("T")


class ConnectorHarness(Protocol):
    """A test source a connector reads, and the edits the checks make to it."""

    namespace: str

    def connector(self) -> Connector:
        """A fresh connector over the test source."""
        ...

    def add(self, hint: str, text: str, readers: list[SourceIdentity]) -> str:
        """Add a document (``hint``: a short name to build its path/key from); returns its doc_id."""
        ...

    def edit(self, doc_id: str, text: str) -> None:
        """Change the document's content (not its permissions)."""
        ...

    def set_readers(self, doc_id: str, readers: list[SourceIdentity]) -> None:
        """Change only who may read the document."""
        ...

    def remove(self, doc_id: str) -> None: ...

    def close(self) -> None: ...


DEFAULT_READERS: tuple[tuple[IdentityKind, str], ...] = (("user", "alice"), ("user", "bob"), ("group", "staff"))


# -- draining streams ----------------------------------------------------------------------------

def drain(stream: Iterator[Batch[T]], since: str | None) -> tuple[list[T], str | None]:
    """Every item of a stream and the checkpoint it ends with (``since`` when it yields no batch)."""
    items: list[T] = []
    checkpoint = since
    for batch in stream:
        assert isinstance(batch, Batch), f"a stream yields Batch objects, got {type(batch).__name__}"
        items.extend(batch.items)
        checkpoint = batch.checkpoint
    return items, checkpoint


def read_documents(h: ConnectorHarness, since: str | None) -> tuple[list[ConnectorDocument], str | None]:
    """``documents(since)`` on a fresh connector, closed afterwards."""
    c = h.connector()
    try:
        return drain(c.documents(since), since)
    finally:
        c.close()


def read_permissions(h: ConnectorHarness, since: str | None) -> tuple[list[PermissionChange], str | None]:
    c = h.connector()
    try:
        return drain(c.permissions(since), since)
    finally:
        c.close()


def read_listing(h: ConnectorHarness) -> list[str]:
    c = h.connector()
    try:
        return c.listing()
    finally:
        c.close()


def _by_id(docs: Sequence[ConnectorDocument]) -> dict[str, ConnectorDocument]:
    ids = [d.doc_id for d in docs]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    assert not dupes, f"one read yielded these documents more than once: {dupes}"
    return {d.doc_id: d for d in docs}


def _identities(acl: SourceAcl) -> frozenset[SourceIdentity]:
    return acl.allow | acl.deny


def _readers(h: ConnectorHarness, pool: Sequence[tuple[IdentityKind, str]]) -> list[SourceIdentity]:
    assert len(pool) >= 3, "the contract needs three distinct identities the test source knows"
    return [SourceIdentity(kind, name, h.namespace) for kind, name in pool]


def _seed(h: ConnectorHarness, pool: Sequence[tuple[IdentityKind, str]]) -> dict[str, tuple[str, list[SourceIdentity]]]:
    """Three documents with different readers: doc_id -> (text, readers)."""
    a, b, g = _readers(h, pool)[:3]
    seeded: dict[str, tuple[str, list[SourceIdentity]]] = {}
    for hint, text, readers in (("alpha", "contract alpha apples", [a]),
                                ("beta", "contract beta bananas", [a, b]),
                                ("gamma", "contract gamma grapes", [g])):
        doc_id = h.add(hint, text, readers)
        assert isinstance(doc_id, str) and doc_id, "add returns the new document's doc_id"
        seeded[doc_id] = (text, readers)
    assert len(seeded) == 3, "add returned the same doc_id for different documents"
    return seeded


# -- the checks ----------------------------------------------------------------------------------

def check_identity(h: ConnectorHarness, pool: Sequence[tuple[IdentityKind, str]] = DEFAULT_READERS) -> None:
    """The connector satisfies the Protocol and declares the harness's namespace."""
    c = h.connector()
    try:
        assert isinstance(c, Connector), "the connector implements ingest.connectors.contract.Connector"
        assert c.namespace == h.namespace, f"connector namespace {c.namespace!r} != harness namespace {h.namespace!r}"
        assert isinstance(c.name, str) and c.name, "a connector carries its source name"
    finally:
        c.close()


def check_full_read(h: ConnectorHarness, pool: Sequence[tuple[IdentityKind, str]] = DEFAULT_READERS) -> None:
    """A full read yields every added document once, its readers allowed, every identity in the
    declared namespace, with provenance."""
    seeded = _seed(h, pool)
    docs, checkpoint = read_documents(h, None)
    found = _by_id(docs)
    assert set(seeded) <= set(found), f"missing from a full read: {sorted(set(seeded) - set(found))}"
    for doc_id, (text, readers) in seeded.items():
        doc = found[doc_id]
        assert text.encode() in doc.content, f"{doc_id}: the content lacks the text it was added with"
        missing = set(readers) - doc.acl.allow
        assert not missing, f"{doc_id}: readers missing from the ACL: {missing}"
        assert not (set(readers) & doc.acl.deny), f"{doc_id}: a reader is denied"
    for doc in docs:
        foreign = [i for i in _identities(doc.acl) if i.namespace != h.namespace]
        assert not foreign, f"{doc.doc_id}: identities outside namespace {h.namespace!r}: {foreign}"
    assert checkpoint is not None, "a full read ends with a checkpoint to resume from"


def check_provenance(h: ConnectorHarness, pool: Sequence[tuple[IdentityKind, str]] = DEFAULT_READERS) -> None:
    """Every document carries a uri, a timezone-aware modified_at and a filename with an extension."""
    _seed(h, pool)
    docs, _ = read_documents(h, None)
    assert docs, "a full read of a seeded source yields documents"
    for doc in docs:
        assert doc.uri, f"{doc.doc_id}: no uri"
        assert doc.modified_at.tzinfo is not None, f"{doc.doc_id}: modified_at is naive"
        assert "." in doc.filename.rsplit("/", 1)[-1], f"{doc.doc_id}: filename {doc.filename!r} has no extension"
        assert isinstance(doc.content, bytes), f"{doc.doc_id}: content is not bytes"


def check_checkpoint_quiet(h: ConnectorHarness, pool: Sequence[tuple[IdentityKind, str]] = DEFAULT_READERS) -> None:
    """Resuming from the checkpoint a full read ended with yields nothing new, on both streams."""
    _seed(h, pool)
    _, dcp = read_documents(h, None)
    again, _ = read_documents(h, dcp)
    assert not again, f"documents(checkpoint) after a full read yielded {[d.doc_id for d in again]}"
    _, pcp = read_permissions(h, None)
    changes, _ = read_permissions(h, pcp)
    assert not changes, f"permissions(checkpoint) after a full read yielded {[c.doc_id for c in changes]}"


def check_edit(h: ConnectorHarness, pool: Sequence[tuple[IdentityKind, str]] = DEFAULT_READERS) -> None:
    """An edit yields only the edited document from ``documents(cp)``, with the new content."""
    seeded = _seed(h, pool)
    _, dcp = read_documents(h, None)
    target = next(iter(seeded))
    h.edit(target, "contract edited elderberries")
    docs, dcp2 = read_documents(h, dcp)
    ids = [d.doc_id for d in docs]
    assert ids == [target], f"after editing {target}, documents(cp) yielded {ids}"
    assert b"contract edited elderberries" in docs[0].content, "the edit's text is in the content"
    assert set(seeded[target][1]) <= docs[0].acl.allow, "an edit keeps the readers"
    quiet, _ = read_documents(h, dcp2)
    assert not quiet, f"the checkpoint after the edit yielded {[d.doc_id for d in quiet]}"


def check_set_readers(h: ConnectorHarness, pool: Sequence[tuple[IdentityKind, str]] = DEFAULT_READERS) -> None:
    """A permission-only change comes from ``permissions(cp)`` with the whole new ACL and not from
    ``documents(cp)``."""
    a, b, g = _readers(h, pool)[:3]
    seeded = _seed(h, pool)
    target = next(d for d, (_, readers) in seeded.items() if readers == [a, b])
    _, dcp = read_documents(h, None)
    _, pcp = read_permissions(h, None)
    h.set_readers(target, [g])
    changes, _ = read_permissions(h, pcp)
    mine = [c for c in changes if c.doc_id == target]
    assert mine, f"permissions(cp) did not yield {target} after its readers changed (yielded {[c.doc_id for c in changes]})"
    acl = mine[-1].acl
    assert g in acl.allow, f"{target}: the new reader {g} is not allowed: {acl}"
    assert a not in acl.allow and b not in acl.allow, f"{target}: a removed reader still reads it: {acl}"
    foreign = [i for i in _identities(acl) if i.namespace != h.namespace]
    assert not foreign, f"identities outside namespace {h.namespace!r}: {foreign}"
    docs, _ = read_documents(h, dcp)
    assert target not in {d.doc_id for d in docs}, "a permission-only change must not come from documents(cp) (it would re-embed)"
    full, _ = read_documents(h, None)
    now = _by_id(full)[target].acl
    assert g in now.allow and a not in now.allow, "a full read after set_readers carries the new ACL"


def check_remove(h: ConnectorHarness, pool: Sequence[tuple[IdentityKind, str]] = DEFAULT_READERS) -> None:
    """``listing()`` holds every present document and drops a removed one (and a full read too)."""
    seeded = _seed(h, pool)
    listed = read_listing(h)
    assert set(seeded) <= set(listed), f"listing lacks {sorted(set(seeded) - set(listed))}"
    target = next(iter(seeded))
    h.remove(target)
    listed = read_listing(h)
    assert target not in listed, f"listing still holds removed {target}"
    assert set(seeded) - {target} <= set(listed), "removing one document dropped others from the listing"
    docs, _ = read_documents(h, None)
    assert target not in {d.doc_id for d in docs}, "a full read still yields a removed document"


def check_reads_agree(h: ConnectorHarness, pool: Sequence[tuple[IdentityKind, str]] = DEFAULT_READERS) -> None:
    """Two full reads agree on ids, content and ACLs (the engine's reconciliation relies on it)."""
    _seed(h, pool)
    first = _by_id(read_documents(h, None)[0])
    second = _by_id(read_documents(h, None)[0])
    assert set(first) == set(second), "two full reads yielded different documents"
    for doc_id, doc in first.items():
        other = second[doc_id]
        assert doc.content == other.content, f"{doc_id}: content differs between two reads"
        assert doc.acl == other.acl, f"{doc_id}: ACL differs between two reads"
    assert set(read_listing(h)) == set(first), "listing() and a full read disagree"


Check = Callable[[ConnectorHarness, Sequence[tuple[IdentityKind, str]]], None]
CHECKS: tuple[Check, ...] = (check_identity, check_full_read, check_provenance, check_checkpoint_quiet,
                             check_edit, check_set_readers, check_remove, check_reads_agree)


class ConnectorContract:
    """Mixin: subclass as ``Test<Name>Connector`` and provide a ``harness`` fixture (a fresh test
    source per test). Override ``READERS`` with three identities (kind, name) the source knows."""

    READERS: tuple[tuple[IdentityKind, str], ...] = DEFAULT_READERS

    @pytest.fixture
    def harness(self) -> Iterator[ConnectorHarness]:  # pragma: no cover - overridden
        raise NotImplementedError("a contract test class provides its own harness fixture")

    def test_identity(self, harness: ConnectorHarness) -> None:
        check_identity(harness, self.READERS)

    def test_full_read(self, harness: ConnectorHarness) -> None:
        check_full_read(harness, self.READERS)

    def test_provenance(self, harness: ConnectorHarness) -> None:
        check_provenance(harness, self.READERS)

    def test_checkpoint_quiet(self, harness: ConnectorHarness) -> None:
        check_checkpoint_quiet(harness, self.READERS)

    def test_edit(self, harness: ConnectorHarness) -> None:
        check_edit(harness, self.READERS)

    def test_set_readers(self, harness: ConnectorHarness) -> None:
        check_set_readers(harness, self.READERS)

    def test_remove(self, harness: ConnectorHarness) -> None:
        check_remove(harness, self.READERS)

    def test_reads_agree(self, harness: ConnectorHarness) -> None:
        check_reads_agree(harness, self.READERS)
