"""Corrupt inputs get specific codes, not the catch-all ``parse_failed`` (issue #16): a charset no
codec knows is ``unknown_charset``, a stream that ends before its own structure says it does is
``truncated_file``; both in-process and through the sandbox."""

from __future__ import annotations

import email
import email.policy
import struct
import zipfile

import pytest

from core.errors import IngestError
from core.settings import IngestSettings
from ingest.parse import ERROR_CODES, _failure_code, parse
from ingest.sandbox import parse_isolated
from tests import fixtures_docs as docs

DEFAULT = IngestSettings()
PLAIN = b"Subject: Budget\nContent-Type: text/plain; charset=x-no-such-charset\n\nThe budget was approved.\n"
HTML = b"Subject: Budget\nContent-Type: text/html; charset=x-no-such-charset\n\n<p>The budget was approved.</p>\n"


@pytest.mark.parametrize("data", [PLAIN, HTML], ids=["plain", "html"])
def test_email_body_in_an_unknown_charset(data: bytes) -> None:
    for run in (parse, parse_isolated):
        with pytest.raises(IngestError) as err:
            run("budget.eml", data, DEFAULT)
        assert err.value.code == "unknown_charset"


def test_an_attachment_in_an_unknown_charset_does_not_cost_the_message_its_body() -> None:
    msg = email.message_from_bytes(docs.make_eml(attachment=("notes.txt", b"Attached notes.\n")),
                                   policy=email.policy.default)
    attachment = next(msg.iter_attachments())  # type: ignore[attr-defined]
    attachment.set_param("charset", "x-no-such-charset")
    text = "\n".join(e.text for e in parse("mail.eml", bytes(msg), DEFAULT))
    assert docs.SENTENCE in text and "Attachment: notes.txt" in text


@pytest.mark.parametrize(("exc", "code"), [
    (LookupError("unknown encoding: x-no-such-charset"), "unknown_charset"),
    (ValueError("negative seek value -22"), "truncated_file"),
    (OSError("unexpected end of data"), "truncated_file"),
    (struct.error("unpack requires a buffer of 4 bytes"), "truncated_file"),
    (zipfile.BadZipFile("File is not a zip file"), "corrupt_file"),
    (EOFError("Compressed file ended before the end-of-stream marker was reached"), "corrupt_file"),
    (KeyError("word/document.xml"), "parse_failed"),  # a LookupError, but not a charset
    (IndexError("list index out of range"), "parse_failed"),
    (RuntimeError("something else"), "parse_failed"),
], ids=lambda v: type(v).__name__ if isinstance(v, Exception) else v)
def test_library_exceptions_map_to_specific_codes(exc: Exception, code: str) -> None:
    assert _failure_code(exc) == code
    assert code in ERROR_CODES
