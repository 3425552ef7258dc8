"""The IMAP connector's contract harness: a fresh mailbox user on a running test Dovecot
(``testkit.dovecot``), driven over IMAP as that user.

Each added document is one message in a folder of its own, so ``set_readers`` (SETACL/DELETEACL
on the folder) changes the readers of that message only. Readers become ACL identifiers the way
Dovecot spells them: a user by name, a group as ``$name``; each gets the rights ``lr``.

IMAP messages are immutable (RFC 3501 2.3.1.1): ``edit`` is what a mail client does, a new
message in the same folder and the old one expunged, so the edited document comes back under a
new doc id (``replace`` returns it). The contract test states that difference instead of running
the generic edit check.
"""

from __future__ import annotations

import imaplib
import itertools
import os
import re
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime

from ingest.connectors.contract import Connector, SourceIdentity
from ingest.connectors.imap import ImapConnector
from ingest.connectors.imap_protocol import quote
from testkit.dovecot import DovecotServer

_APPENDUID = re.compile(rb"\[APPENDUID (\d+) (\d+)\]")

Attachment = tuple[str, bytes, str]  # (filename, content, "maintype/subtype")


def acl_identifier(identity: SourceIdentity) -> str:
    """The IMAP ACL identifier Dovecot uses for a source identity."""
    return f"${identity.name}" if identity.kind == "group" else identity.name


def message(subject: str, body: str, *, sender: str, to: str, attachments: Sequence[Attachment] = ()) -> bytes:
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = sender
    msg["To"] = to
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = f"<{secrets.token_hex(8)}@clearance.test>"
    msg.set_content(body)
    for filename, content, ctype in attachments:
        maintype, subtype = ctype.split("/", 1)
        msg.add_attachment(content, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes()


class ImapHarness:
    """A mailbox on ``server`` (a fresh one unless ``user`` is given); the connector reads it as that user."""

    namespace = "imap"

    def __init__(self, server: DovecotServer, *, user: str | None = None, **connector_config: object) -> None:
        self.server = server
        self.user = user or server.claim_user()
        self.password = server.password(self.user)
        self.password_env = f"CLEARANCE_CONNECTOR_SECRET_TEST_IMAP_PW_{secrets.token_hex(6).upper()}"
        os.environ[self.password_env] = self.password
        self.connector_config = connector_config
        self._folders = itertools.count(1)
        self.imap = imaplib.IMAP4(server.host, server.port, timeout=10)
        self.imap.login(self.user, self.password)

    # -- the connector ----------------------------------------------------------------------------
    def config(self) -> dict[str, object]:
        return {"host": self.server.host, "port": self.server.port, "tls": "none", "username": self.user,
                "password_env": self.password_env, "namespace": self.namespace, "timeout_s": 10,
                **self.connector_config}

    def connector(self) -> Connector:
        return ImapConnector(f"imap-{self.user}", self.config())

    # -- mail -------------------------------------------------------------------------------------
    def new_folder(self, hint: str) -> str:
        folder = f"{re.sub(r'[^A-Za-z0-9-]', '-', hint) or 'folder'}-{next(self._folders)}"
        self._ok(self.imap.create(quote(folder)))
        return folder

    def append(self, folder: str, subject: str, body: str, attachments: Sequence[Attachment] = ()) -> str:
        """Deliver a message; returns its doc id (``folder/UIDVALIDITY/UID``, from APPENDUID)."""
        raw = message(subject, body, sender=f"{self.user}@clearance.test", to=f"{self.user}@clearance.test",
                      attachments=attachments)
        typ, data = self.imap.append(quote(folder), None, None, raw)
        self._ok((typ, data))
        m = _APPENDUID.search(b" ".join(d for d in data if isinstance(d, bytes)))
        assert m, f"no APPENDUID in {data!r}"
        return f"{folder}/{int(m.group(1))}/{int(m.group(2))}"

    def share(self, folder: str, identifier: str, rights: str = "lr") -> None:
        self._ok(self.imap.setacl(quote(folder), quote(identifier), rights))

    def unshare(self, folder: str, identifier: str) -> None:
        self._ok(self.imap.deleteacl(quote(folder), quote(identifier)))

    def expunge(self, doc_id: str) -> None:
        folder, _, uid = doc_id.rsplit("/", 2)
        self._ok(self.imap.select(quote(folder)))
        self._ok(self.imap.uid("STORE", uid, "+FLAGS.SILENT", r"(\Deleted)"))
        self._ok(self.imap.uid("EXPUNGE", uid))
        self._ok(self.imap.unselect())

    def acl_identifiers(self, folder: str) -> list[str]:
        typ, data = self.imap.getacl(quote(folder))
        self._ok((typ, data))
        words = b" ".join(d for d in data if isinstance(d, bytes)).decode().split()[1:]
        return [w for w in words[0::2]]

    # -- the harness protocol ---------------------------------------------------------------------
    def add(self, hint: str, text: str, readers: list[SourceIdentity]) -> str:
        folder = self.new_folder(hint)
        doc_id = self.append(folder, f"contract {hint}", text)
        for reader in readers:
            self.share(folder, acl_identifier(reader))
        return doc_id

    def replace(self, doc_id: str, text: str) -> str:
        """A changed message: a new one in the same folder, the old one expunged; the new doc id."""
        folder = doc_id.rsplit("/", 2)[0]
        new_id = self.append(folder, "contract edited", text)
        self.expunge(doc_id)
        return new_id

    def edit(self, doc_id: str, text: str) -> None:
        self.replace(doc_id, text)

    def set_readers(self, doc_id: str, readers: list[SourceIdentity]) -> None:
        folder = doc_id.rsplit("/", 2)[0]
        for ident in self.acl_identifiers(folder):
            if ident != self.user:
                self.unshare(folder, ident)
        for reader in readers:
            self.share(folder, acl_identifier(reader))

    def remove(self, doc_id: str) -> None:
        self.expunge(doc_id)

    def close(self) -> None:
        try:
            self.imap.logout()
        except (imaplib.IMAP4.error, OSError):
            pass
        os.environ.pop(self.password_env, None)

    @staticmethod
    def _ok(result: tuple[str, Sequence[object]]) -> None:
        typ, data = result
        assert typ == "OK", f"IMAP command failed: {typ} {data!r}"
