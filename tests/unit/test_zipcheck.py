"""Zip structure validation (``ingest.zipcheck``): OOXML files that zipfile opens without a word
but lie in their structure are refused, each with its own code, before any parser sees them;
legitimate layouts (data descriptors, honest zip64 records, every generated format) pass."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from functools import cache

import pytest

from battery import hostile_files as H
from core.errors import IngestError
from core.settings import IngestSettings
from ingest.parse import ERROR_CODES, parse
from ingest.zipcheck import MAX_NAME_BYTES, check_zip
from tests import fixtures_docs as docs

DEFAULT = IngestSettings()


@cache
def docx() -> bytes:
    return docs.make_docx()


CASES: list[tuple[str, Callable[[], bytes], str]] = [
    ("dotdot", lambda: H.zip_with_entry(docx(), "word/../../evil.xml"), "zip_unsafe_name"),
    ("absolute", lambda: H.zip_with_entry(docx(), "/etc/cron.d/evil"), "zip_unsafe_name"),
    ("drive", lambda: H.zip_with_entry(docx(), "C:/Windows/evil.xml"), "zip_unsafe_name"),
    ("backslash", lambda: H.zip_with_entry(docx(), "word\\..\\..\\evil.xml"), "zip_unsafe_name"),
    ("long-name", lambda: H.zip_with_entry(docx(), "word/" + "a" * 65_000), "zip_unsafe_name"),
    ("rtl-override", lambda: H.zip_with_entry(docx(), "word/media/evil\u202egnp.xml"), "zip_unsafe_name"),
    ("control", lambda: H.zip_with_entry(docx(), "word/ev\x1bil.xml"), "zip_unsafe_name"),
    ("nul", lambda: H.zip_with_entry(docx(), "word/document.xml\0.png"), "zip_unsafe_name"),
    ("duplicate", lambda: H.zip_with_entry(docx(), "Word/Document.xml"), "zip_unsafe_name"),
    ("symlink-device", lambda: H.zip_symlink(docx(), "/dev/zero"), "zip_symlink"),
    ("symlink-loop", lambda: H.zip_symlink(docx(), "word/media/image9.png"), "zip_symlink"),
    ("symlink-dir", lambda: H.zip_symlink(docx(), "../../../", "word/media/"), "zip_symlink"),
    ("local-name", lambda: H.zip_local_name_mismatch(docx()), "zip_header_mismatch"),
    ("local-crc", lambda: H.zip_local_crc_mismatch(docx()), "zip_header_mismatch"),
    ("count-high", lambda: H.zip_count_lie(docx(), 1), "zip_implausible"),
    ("count-low", lambda: H.zip_count_lie(docx(), -1), "zip_implausible"),
    ("zip64-2^40", lambda: H.zip64_huge_count(docx()), "zip_implausible"),
    ("size-past-end", lambda: H.zip_size_lie(H.zip_streamed(docx())), "zip_implausible"),
    ("overlap", lambda: H.zip_overlapping(docx()), "zip_implausible"),
    ("trailing", lambda: H.zip_trailing(docx()), "zip_trailing_data"),
    ("trailing-100k", lambda: H.zip_trailing(docx(), b"x" * 100_000), "zip_trailing_data"),
    ("concatenated", lambda: H.zip_concatenated(docx(), docs.make_docx()), "zip_trailing_data"),
]


@pytest.mark.parametrize(("name", "make", "code"), CASES, ids=[c[0] for c in CASES])
def test_structural_lie_is_refused_with_its_code_before_any_parser(name: str, make: Callable[[], bytes],
                                                                  code: str) -> None:
    data = make()
    if name != "trailing-100k":  # zipfile gives up on 100 KB of trailing bytes; the rest it opens
        zipfile.ZipFile(io.BytesIO(data)).testzip()
    with pytest.raises(IngestError) as err:
        check_zip(data, DEFAULT)
    assert err.value.code == code, err.value.message
    assert code in ERROR_CODES
    with pytest.raises(IngestError) as err:  # the same through parse(): filecheck runs it first
        parse("attack.docx", data, DEFAULT)
    assert err.value.code == code


@pytest.mark.parametrize("make", [docs.make_docx, docs.make_xlsx, docs.make_pptx,
                                  lambda: H.zip_streamed(docs.make_docx()), lambda: H.zip_streamed(docs.make_xlsx()),
                                  lambda: H.zip64_huge_count(docx(), len(zipfile.ZipFile(io.BytesIO(docx())).infolist())),
                                  lambda: H.zip_with_entry(docx(), "customXml/caf\u00e9 item.xml"),
                                  lambda: H.zip_with_entry(docx(), "word/" + "a" * (MAX_NAME_BYTES - 5))],
                         ids=["docx", "xlsx", "pptx", "streamed-docx", "streamed-xlsx", "honest-zip64", "utf8-name",
                              "name-at-cap"])
def test_legitimate_layouts_pass(make: Callable[[], bytes]) -> None:
    check_zip(make(), DEFAULT)


def test_streamed_package_still_parses() -> None:
    text = "\n".join(e.text for e in parse("streamed.docx", H.zip_streamed(docx()), DEFAULT))
    assert docs.SENTENCE in text


def test_declared_member_count_over_the_cap_is_a_zip_bomb_before_the_directory_is_read() -> None:
    with pytest.raises(IngestError) as err:
        check_zip(H.many_members(docx(), 60), IngestSettings(ooxml_max_members=50))
    assert err.value.code == "zip_bomb"


def test_truncated_zip_stays_corrupt_file() -> None:
    with pytest.raises(IngestError) as err:
        check_zip(docs.truncated(docx(), 0.5), DEFAULT)
    assert err.value.code == "corrupt_file"
