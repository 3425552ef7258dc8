"""The IMAP connector through the engine (``app.connectors.ConnectorSync``), against a real
Dovecot started here, into the real catalog (SQLite) and Edge index.

What it holds:
- a message and its attachment become searchable, only by the mailbox's owner;
- sharing the folder (SETACL) makes it visible to that user after one permission run, with no
  embedder call, and the change is in the write audit with the ACL before and after;
- removing the share revokes it, again without the embedder;
- an expunged message is deleted from the index by the next content run;
- the connector refuses cleartext to a remote host and secrets in its config, reads the mailbox
  without marking anything \\Seen, skips a message over ``max_message_bytes`` unread, and reads
  over implicit TLS and STARTTLS with the server's certificate as its only trust anchor;
- a master user reads several mailboxes, each message visible to its own mailbox's owner.
"""

from __future__ import annotations

import os
import secrets
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.services import Services, build_services
from app.sources import ConnectorSpec
from auth.authenticator import ADMIN
from core.errors import ConfigError
from core.settings import IdentityRule, IdentitySettings
from core.types import Entitlements, Scope
from ingest.connectors.contract import SourceIdentity
from ingest.connectors.imap import ImapConnector
from ingest.connectors.imap_protocol import quote
from testkit.connector_contract import drain
from testkit.dovecot import ADMIN as DOVECOT_ADMIN
from testkit.dovecot import DovecotServer, available
from testkit.harness_imap import ImapHarness
from tests.api.test_push import CountingEmbedder
from tests.conftest import make_settings

pytestmark = pytest.mark.skipif(not available(), reason="Dovecot is not installed (apt-get install dovecot-imapd)")

PHRASE = "zebraquartz nebulafjord"  # only in the attachment
IDENTITY = IdentitySettings(rules=[IdentityRule(namespace="imap", kind="user", principal="user:{name}"),
                                   IdentityRule(namespace="imap", kind="group", principal="group:{name}")])


@pytest.fixture(scope="module")
def dovecot() -> Iterator[DovecotServer]:
    with DovecotServer(tls=True) as server:
        yield server


@pytest.fixture
def mailbox(dovecot: DovecotServer) -> Iterator[ImapHarness]:
    h = ImapHarness(dovecot)
    yield h
    h.close()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[Services, CountingEmbedder]]:
    emb = CountingEmbedder()
    services = build_services(make_settings(tmp_path, identity=IDENTITY), embedder=emb)
    yield services, emb
    services.close()


def register(services: Services, name: str, config: dict[str, object]) -> None:
    tenant = services.settings.ingest.tenant
    admin = Entitlements("admin", "test", tenant, frozenset({"user:admin"}), frozenset({ADMIN}))
    services.sources.create(admin, name, "connector", [], None, connector=ConnectorSpec("imap", config))


def visible(services: Services, principal: str, query: str = PHRASE) -> set[str]:
    scope = Scope(Entitlements("reader", "test", services.settings.ingest.tenant, frozenset({principal})))
    result = services.search_unaudited.search(scope, query, top_k=50, mode="bm25")
    return {h.provenance["doc_id"] for h in result.hits}


def test_mail_is_searchable_by_owner_and_shares_follow_the_folder_acl(
        env: tuple[Services, CountingEmbedder], mailbox: ImapHarness) -> None:
    services, emb = env
    owner = mailbox.user
    folder = mailbox.new_folder("Projects")
    doc = mailbox.append(folder, "Quarterly plan", "See the attached notes.",
                         attachments=[("notes.md", f"# Notes\n\nThe codename is {PHRASE}.\n".encode(), "text/markdown")])
    other = mailbox.append("INBOX", "Lunch", "Nothing to see here.")
    for i in range(4):  # so that one expunge stays under the mass-delete guard (20 %)
        mailbox.append("INBOX", f"Filler {i}", "Routine mail.")
    register(services, "mail", mailbox.config())
    sync = services.connectors
    assert sync is not None

    report = sync.run_content("mail")
    assert report.outcome == "ok", report.as_dict()
    assert report.counts.get("added") == 6 and not report.unmapped
    assert visible(services, f"user:{owner}") == {doc}, "the attachment's phrase finds the message, for its owner"
    assert visible(services, "user:alice") == set() and visible(services, "user:bob") == set()
    assert other in visible(services, f"user:{owner}", "Lunch")

    # share the folder with alice: one permission run, no embedder call
    mailbox.share(folder, "alice")
    before = emb.texts
    report = sync.run_permissions("mail")
    assert report.outcome == "ok", report.as_dict()
    assert report.counts.get("acl_updated") == 1, report.counts  # the shared folder's one message
    assert emb.texts == before, "a permission sync must not embed"
    assert visible(services, "user:alice") == {doc}
    assert visible(services, "user:bob") == set()
    events = [e for e in services.write_audit.events(source="mail")
              if e["doc_id"] == doc and e["action"] == "connector_permissions"]
    assert events, "the ACL change is in the write audit"
    assert "user:alice" in events[-1]["acl_after"]["allow"] and "user:alice" not in events[-1]["acl_before"]["allow"]
    assert events[-1]["subject"] == "connector:mail"

    # a second permission run with nothing changed is quiet
    assert sync.run_permissions("mail").counts.get("acl_updated", 0) == 0

    # revoke
    mailbox.unshare(folder, "alice")
    report = sync.run_permissions("mail")
    assert report.counts.get("acl_updated") == 1, report.counts
    assert emb.texts == before, "revoking must not embed either"
    assert visible(services, "user:alice") == set()
    assert visible(services, f"user:{owner}") == {doc}

    # expunge: the next content run deletes it
    mailbox.expunge(doc)
    report = sync.run_content("mail")
    assert report.outcome == "ok", (report.error, report.counts)
    assert report.counts.get("deleted") == 1, report.counts
    assert visible(services, f"user:{owner}") == set()
    assert other in visible(services, f"user:{owner}", "Lunch")


def test_group_share_and_negative_right(mailbox: ImapHarness) -> None:
    """``$group`` entries allow the group; ``-user`` entries deny the user; ``anyone`` grants
    nobody under the default policy (and the group named by ``anyone_group`` otherwise)."""
    folder = mailbox.new_folder("Team")
    doc = mailbox.append(folder, "Team note", "hello team")
    mailbox.share(folder, "$staff")
    mailbox.share(folder, "-bob", "r")
    mailbox.share(folder, "anyone", "lr")
    c = mailbox.connector()
    try:
        docs, _ = drain(c.documents(None), None)
        c2 = ImapConnector("x", {**mailbox.config(), "anyone_group": "everyone", "owner_identity": "boss@clearance.test"})
        docs2, _ = drain(c2.documents(None), None)
        c2.close()
    finally:
        c.close()
        mailbox.unshare(folder, "anyone")  # every mailbox on the server would see it otherwise
    acl = next(d.acl for d in docs if d.doc_id == doc)
    ns = "imap"
    assert acl.allow == {SourceIdentity("user", mailbox.user, ns), SourceIdentity("group", "staff", ns)}
    assert acl.deny == {SourceIdentity("user", "bob", ns)}
    # anyone_group stands for "anyone"; owner_identity names the owner (GETACL says "mailboxN")
    assert next(d.acl for d in docs2 if d.doc_id == doc).allow == {
        SourceIdentity("user", "boss@clearance.test", ns), SourceIdentity("group", "staff", ns),
        SourceIdentity("group", "everyone", ns)}


def test_shared_folder_seen_from_the_reader_side(dovecot: DovecotServer, mailbox: ImapHarness) -> None:
    """A folder shared *with* the connector's user (no admin right, GETACL refused) is read with
    the owner and the reader only: never more readers than the source grants."""
    folder = mailbox.new_folder("Shared")
    mailbox.share(folder, "alice")
    mailbox.append(folder, "For alice", "shared content")
    reader = ImapHarness(dovecot, user="alice")
    try:
        c = reader.connector()
        try:
            docs, _ = drain(c.documents(None), None)
        finally:
            c.close()
        mine = [d for d in docs if d.doc_id.startswith(f"shared/{mailbox.user}/{folder}/")]
        assert len(mine) == 1
        assert mine[0].acl.allow == {SourceIdentity("user", mailbox.user, "imap"), SourceIdentity("user", "alice", "imap")}
    finally:
        reader.close()


def test_reading_never_sets_seen_and_oversized_messages_are_skipped(mailbox: ImapHarness) -> None:
    small = mailbox.append("INBOX", "small", "short body")
    big = mailbox.append("INBOX", "big", "x" * 5000)
    c = ImapConnector("x", {**mailbox.config(), "max_message_bytes": 2048})
    try:
        docs, _ = drain(c.documents(None), None)
        assert [d.doc_id for d in docs] == [small]
        assert [d for d, _ in c.skipped] == [big] and "too_large" in c.skipped[0][1]
        assert set(c.listing()) == {small, big}, "a skipped message is still listed (it exists)"
    finally:
        c.close()
    doc = docs[0]
    assert doc.title == "small" and doc.filename.endswith(".eml") and doc.modified_at.tzinfo is not None
    assert doc.uri.startswith(f"imap://{mailbox.server.host}:{mailbox.server.port}/INBOX;UIDVALIDITY=")
    assert doc.metadata["from"] == f"{mailbox.user}@clearance.test"
    mailbox.imap.select("INBOX", readonly=True)
    typ, data = mailbox.imap.uid("SEARCH", "SEEN")
    assert typ == "OK" and data[0].split() == [], "the connector marked messages \\Seen"


def test_tls_modes(dovecot: DovecotServer, mailbox: ImapHarness) -> None:
    doc = mailbox.append("INBOX", "over tls", "encrypted transport")
    assert dovecot.cert_file is not None
    for tls, port in (("ssl", dovecot.tls_port), ("starttls", dovecot.port)):
        c = ImapConnector("x", {**mailbox.config(), "tls": tls, "port": port, "ca_file": str(dovecot.cert_file)})
        try:
            assert doc in c.listing()
        finally:
            c.close()
    # without the test CA the server's certificate is not trusted: the connector fails, closed
    c = ImapConnector("x", {**mailbox.config(), "tls": "ssl", "port": dovecot.tls_port})
    try:
        with pytest.raises(ConfigError, match="CERTIFICATE_VERIFY_FAILED"):
            c.listing()
    finally:
        c.close()


def test_config_refusals(mailbox: ImapHarness) -> None:
    base = mailbox.config()
    with pytest.raises(ConfigError, match="loopback"):
        ImapConnector("x", {**base, "host": "mail.example.com", "tls": "none"})
    with pytest.raises(ConfigError, match="password never goes in the config"):
        ImapConnector("x", {**base, "password": "hunter2"})
    with pytest.raises(ConfigError, match="unknown config keys"):
        ImapConnector("x", {**base, "folder": "INBOX"})
    # password_env may only name a connector secret: never the SCIM token or any other server variable,
    # which the connector would otherwise send as a login password to a host the admin chose.
    os.environ["CLEARANCE_DIRECTORY__SCIM_TOKEN_TEST_IMAP"] = "not-for-imap"
    try:
        for name in ("CLEARANCE_DIRECTORY__SCIM_TOKEN_TEST_IMAP", "HOME", "clearance_connector_secret_x", "CLEARANCE_CONNECTOR_SECRET_"):
            with pytest.raises(ConfigError, match="CLEARANCE_CONNECTOR_SECRET_") as refused:
                ImapConnector("x", {**base, "password_env": name})
            assert "not-for-imap" not in str(refused.value)
    finally:
        os.environ.pop("CLEARANCE_DIRECTORY__SCIM_TOKEN_TEST_IMAP", None)
    c = ImapConnector("x", {**base, "password_env": "CLEARANCE_CONNECTOR_SECRET_TEST_IMAP_UNSET_" + secrets.token_hex(4).upper()})
    with pytest.raises(ConfigError, match="is not set"):
        c.listing()


def test_master_user_reads_several_mailboxes(dovecot: DovecotServer) -> None:
    one, two = ImapHarness(dovecot), ImapHarness(dovecot)
    env_name = "CLEARANCE_CONNECTOR_SECRET_TEST_IMAP_MASTER_" + secrets.token_hex(4).upper()
    os.environ[env_name] = dovecot.password(DOVECOT_ADMIN)
    try:
        a = one.append("INBOX", "one", "first mailbox")
        b = two.append("INBOX", "two", "second mailbox")
        c = ImapConnector("x", {"host": dovecot.host, "port": dovecot.port, "tls": "none", "master_user": DOVECOT_ADMIN,
                                "password_env": env_name, "users": [one.user, two.user]})
        try:
            docs, _ = drain(c.documents(None), None)
        finally:
            c.close()
        by_id = {d.doc_id: d for d in docs}
        assert set(by_id) == {f"~{one.user}/{a}", f"~{two.user}/{b}"}
        assert by_id[f"~{one.user}/{a}"].acl.allow == {SourceIdentity("user", one.user, "imap")}
        assert by_id[f"~{two.user}/{b}"].acl.allow == {SourceIdentity("user", two.user, "imap")}
    finally:
        os.environ.pop(env_name, None)
        one.close()
        two.close()


def test_uidvalidity_change_rereads_the_folder(mailbox: ImapHarness) -> None:
    """A folder deleted and made again gets a new UIDVALIDITY: its messages come back under new
    ids from ``documents(cp)`` and the old ids leave the listing."""
    folder = mailbox.new_folder("Recreated")
    old = mailbox.append(folder, "before", "old generation")
    c = mailbox.connector()
    try:
        _, cp = drain(c.documents(None), None)
    finally:
        c.close()
    mailbox._ok(mailbox.imap.delete(f'"{folder}"'))
    mailbox._ok(mailbox.imap.create(f'"{folder}"'))
    new = mailbox.append(folder, "after", "new generation")
    assert new != old
    c = mailbox.connector()
    try:
        docs, _ = drain(c.documents(cp), cp)
        listed = c.listing()
    finally:
        c.close()
    assert [d.doc_id for d in docs] == [new]
    assert old not in listed and new in listed


def test_folder_names_that_need_quoting_or_encoding(mailbox: ImapHarness) -> None:
    """Names with spaces, quotes, backslashes and non-ASCII (modified UTF-7) round-trip through
    LIST, EXAMINE, GETACL and the doc id; plain SEARCH (no ESEARCH) lists the same messages."""
    names = ['Team "Q4" plans', "back\\slash", "Entw&APw-rfe"]  # the last is "Entwürfe" in modified UTF-7
    ids = {}
    for name in names:
        mailbox._ok(mailbox.imap.create(quote(name)))
        ids[name] = mailbox.append(name, f"in {name}", "folder name test")
        mailbox.share(name, "alice")
    c = ImapConnector("x", mailbox.config())
    try:
        docs, _ = drain(c.documents(None), None)
        by_id = {d.doc_id: d for d in docs}
        for name, doc_id in ids.items():
            assert doc_id in by_id, f"{name!r} was not read"
            assert SourceIdentity("user", "alice", "imap") in by_id[doc_id].acl.allow
        assert by_id[ids["Entw&APw-rfe"]].metadata["folder"] == "Entwürfe"
        assert "/Entw%C3%BCrfe;UIDVALIDITY=" in by_id[ids["Entw&APw-rfe"]].uri
        with_esearch = sorted(c.listing())
        for session in c._sessions.values():
            session.capabilities.discard("ESEARCH")
        assert sorted(c.listing()) == with_esearch and set(ids.values()) <= set(with_esearch)
    finally:
        c.close()



def test_wrong_password_is_a_login_error(mailbox: ImapHarness) -> None:
    """Last in the module: Dovecot delays the next login from an address after a failed one."""
    os.environ["CLEARANCE_CONNECTOR_SECRET_TEST_IMAP_WRONG"] = "not-the-password"
    try:
        c = ImapConnector("x", {**mailbox.config(), "password_env": "CLEARANCE_CONNECTOR_SECRET_TEST_IMAP_WRONG"})
        with pytest.raises(ConfigError, match="login") as info:
            c.listing()
        assert "not-the-password" not in str(info.value)
    finally:
        os.environ.pop("CLEARANCE_CONNECTOR_SECRET_TEST_IMAP_WRONG", None)


_HONEST = "Subject: after the liar\r\n\r\nread on\r\n"


class _LyingServer(socketserver.StreamRequestHandler):
    """An IMAP server that announces a 100-byte message (UID 1) and then sends a 50 MB literal
    for it; UID 2 is an honest message."""

    def handle(self) -> None:
        self.wfile.write(b"* OK [CAPABILITY IMAP4rev1] liar ready\r\n")
        for raw in self.rfile:
            tag, _, rest = raw.decode().strip().partition(" ")
            cmd = rest.upper()
            if cmd.startswith("CAPABILITY"):
                out = "* CAPABILITY IMAP4rev1\r\n"
            elif cmd.startswith("LIST"):
                out = '* LIST () "/" INBOX\r\n'
            elif cmd.startswith("STATUS"):
                out = "* STATUS INBOX (UIDVALIDITY 7 UIDNEXT 3)\r\n"
            elif cmd.startswith("EXAMINE"):
                out = "* 2 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n"
            elif cmd.startswith("GETACL"):
                self.wfile.write(f"{tag} NO not an admin\r\n".encode())
                continue
            elif cmd.startswith("MYRIGHTS"):
                out = "* MYRIGHTS INBOX lr\r\n"
            elif cmd.startswith("UID SEARCH"):
                out = "* SEARCH 1 2\r\n"
            elif cmd.startswith("UID FETCH 2 ") and "BODY.PEEK" in cmd:
                out = f"* 2 FETCH (UID 2 BODY[] {{{len(_HONEST)}}}\r\n{_HONEST})\r\n"
            elif cmd.startswith("UID FETCH") and "BODY.PEEK" in cmd:
                try:
                    self.wfile.write(b"* 1 FETCH (UID 1 BODY[] {50000000}\r\n" + b"x" * 1_000_000)
                except OSError:
                    pass
                return
            elif cmd.startswith("UID FETCH"):
                out = ('* 1 FETCH (UID 1 RFC822.SIZE 100 INTERNALDATE "04-Dec-2026 20:28:54 +0000")\r\n'
                       f'* 2 FETCH (UID 2 RFC822.SIZE {len(_HONEST)} INTERNALDATE "04-Dec-2026 20:29:54 +0000")\r\n')
            elif cmd.startswith("LOGOUT"):
                self.wfile.write(f"* BYE\r\n{tag} OK bye\r\n".encode())
                return
            else:
                out = ""
            self.wfile.write(f"{out}{tag} OK done\r\n".encode())


def test_a_server_lying_about_the_size_is_cut_off_at_the_bound() -> None:
    """The client refuses a literal over ``max_message_bytes`` before reading it; the message is
    skipped for good (reported in ``skipped``, past the checkpoint) and the run reads on, so a
    lying server never makes every run fail at the same UID."""
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _LyingServer) as server:
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        os.environ["CLEARANCE_CONNECTOR_SECRET_TEST_IMAP_LIAR"] = "pw"
        try:
            c = ImapConnector("liar", {"host": "127.0.0.1", "port": server.server_address[1], "tls": "none",
                                       "username": "u", "password_env": "CLEARANCE_CONNECTOR_SECRET_TEST_IMAP_LIAR",
                                       "max_message_bytes": 4096})
            docs, cp = drain(c.documents(None), None)
            assert [d.doc_id for d in docs] == ["INBOX/7/2"]
            assert [d for d, _ in c.skipped] == ["INBOX/7/1"] and "too_large" in c.skipped[0][1]
            again, _ = drain(c.documents(cp), cp)
            assert again == []  # the skipped UID is done: the next run does not stop at it again
            c.close()
        finally:
            os.environ.pop("CLEARANCE_CONNECTOR_SECRET_TEST_IMAP_LIAR", None)
            server.shutdown()
