"""The connector contract suite on the IMAP connector, against a real Dovecot started here.

One Dovecot per module (it starts in well under a second); each test gets a fresh mailbox user,
so every test reads a source of its own. The generic edit check is replaced by IMAP's own rule:
a message never changes in place (RFC 3501), a changed message is a new UID, hence a new doc id,
and the old one leaves the listing.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testkit.connector_contract import ConnectorContract, ConnectorHarness, read_documents, read_listing
from testkit.dovecot import DovecotServer, available
from testkit.harness_imap import ImapHarness

pytestmark = pytest.mark.skipif(not available(), reason="Dovecot is not installed (apt-get install dovecot-imapd)")


@pytest.fixture(scope="module")
def dovecot() -> Iterator[DovecotServer]:
    with DovecotServer() as server:
        yield server


class TestImapConnector(ConnectorContract):
    READERS = (("user", "alice"), ("user", "bob"), ("group", "staff"))

    @pytest.fixture
    def harness(self, dovecot: DovecotServer) -> Iterator[ConnectorHarness]:
        h = ImapHarness(dovecot)
        yield h
        h.close()

    def test_edit(self, harness: ConnectorHarness) -> None:  # type: ignore[override]
        """A replaced message comes from documents(cp) under its new id with the new text and the
        folder's readers; nothing else does; the old id leaves the listing."""
        assert isinstance(harness, ImapHarness)
        alice = harness.connector().namespace
        old = harness.add("edited", "contract original figs", [])
        harness.share(old.rsplit("/", 2)[0], "alice")
        _, cp = read_documents(harness, None)
        new = harness.replace(old, "contract edited elderberries")
        assert new != old
        docs, cp2 = read_documents(harness, cp)
        assert [d.doc_id for d in docs] == [new]
        assert b"contract edited elderberries" in docs[0].content
        assert any(i.name == "alice" and i.namespace == alice for i in docs[0].acl.allow)
        listed = read_listing(harness)
        assert new in listed and old not in listed
        again, _ = read_documents(harness, cp2)
        assert not again
