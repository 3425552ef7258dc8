"""Hostile and broken files: each maps to its stable error code, in-process and through the
sandbox, and neither the caller nor the sandbox worker goes down."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import cache

import pytest

from core.errors import IngestError
from core.settings import IngestSettings
from ingest.chunking import chunk_elements
from ingest.parse import ERROR_CODES, parse
from ingest.sandbox import parse_isolated, shared_pool
from tests import fixtures_docs as docs

DEFAULT = IngestSettings()

# name, bytes factory, expected code, settings overrides
CASES: list[tuple[str, Callable[[], bytes], str, dict[str, object]]] = [
    ("bomb.docx", lambda: docs.zip_bomb(docs.make_docx(), member_bytes=32 << 20), "zip_bomb", {}),
    ("bomb.xlsx", lambda: docs.zip_bomb(docs.make_xlsx(), member_bytes=32 << 20), "zip_bomb", {}),
    ("bomb.pptx", lambda: docs.zip_bomb(docs.make_pptx(), member_bytes=32 << 20), "zip_bomb", {}),
    ("members.docx", lambda: docs.many_members(docs.make_docx(), 100), "zip_bomb", {"ooxml_max_members": 50}),
    ("inflated.xlsx", docs.make_xlsx, "zip_bomb", {"ooxml_max_uncompressed_bytes": 4096}),
    ("laughs.docx", docs.billion_laughs_docx, "xml_bomb", {}),
    ("laughs-utf16.docx", lambda: docs.billion_laughs_docx(utf16=True), "xml_bomb", {}),
    ("nested.pdf", docs.deeply_nested_pdf, "corrupt_file", {}),
    ("page-tree.pdf", docs.deep_page_tree_pdf, "corrupt_file", {}),
    ("stream-bomb.pdf", lambda: docs.stream_bomb_pdf(100 << 20), "zip_bomb", {}),
    ("truncated.docx", lambda: docs.truncated(docs.make_docx()), "corrupt_file", {}),
    ("truncated.pptx", lambda: docs.truncated(docs.make_pptx(), 0.9), "corrupt_file", {}),
    ("truncated.pdf", lambda: docs.truncated(docs.make_pdf()), "corrupt_file", {}),
    ("bad-crc.docx", lambda: docs.bad_crc(docs.make_docx()), "corrupt_file", {}),
    ("locked.pdf", docs.encrypted_pdf, "encrypted", {}),
    ("locked.docx", docs.encrypted_ooxml, "encrypted", {}),
    ("ole-header.xlsx", lambda: docs.OLE_MAGIC + b"\0" * 504, "encrypted", {}),
    ("legacy.docx", docs.legacy_ole, "type_mismatch", {}),
    ("pdf-named.docx", docs.make_pdf, "type_mismatch", {}),
    ("docx-named.pdf", docs.make_docx, "type_mismatch", {}),
    ("xlsx-named.docx", docs.make_xlsx, "type_mismatch", {}),
    ("pdf-named.txt", docs.make_pdf, "type_mismatch", {}),
    ("png-named.html", lambda: docs.PNG, "type_mismatch", {}),
    ("zip-named.pptx", docs.plain_zip, "type_mismatch", {}),
    ("garbage.txt", docs.garbage, "corrupt_file", {}),
    ("garbage.csv", docs.garbage, "corrupt_file", {}),
    ("garbage.eml", docs.garbage, "corrupt_file", {}),
    ("garbage.docx", docs.garbage, "corrupt_file", {}),
    ("garbage.pdf", docs.garbage, "corrupt_file", {}),
    ("empty.txt", lambda: b"", "empty_file", {}),
    ("empty.docx", lambda: b"", "empty_file", {}),
    ("blank.md", lambda: b" \n\t\n", "empty_file", {}),
    ("program.exe", lambda: b"MZ\x90\x00", "unsupported_type", {}),
    ("big.txt", lambda: b"x" * 2048, "too_large", {"max_file_bytes": 1024}),
    ("huge-line.md", lambda: b"# T\n\n" + docs.huge_line_txt(11 << 20), "too_large", {}),
    ("huge-line.html", lambda: b"<p>" + docs.huge_line_txt(11 << 20) + b"</p>", "too_large", {}),
    ("scan.pdf", docs.image_only_pdf, "no_text", {}),
]


@cache
def content(name: str) -> bytes:
    return next(make for n, make, _, _ in CASES if n == name)()


@pytest.fixture(scope="module", autouse=True)
def warm_sandbox() -> Iterator[None]:
    shared_pool(DEFAULT).warm(wait=False)  # starts while the in-process cases run
    yield


@pytest.mark.parametrize(("name", "code", "overrides"), [(n, c, o) for n, _, c, o in CASES], ids=[n for n, *_ in CASES])
def test_in_process(name: str, code: str, overrides: dict[str, object]) -> None:
    with pytest.raises(IngestError) as err:
        parse(name, content(name), IngestSettings(**overrides))  # type: ignore[arg-type]
    assert err.value.code == code, err.value.message
    assert code in ERROR_CODES


def test_sandbox_maps_every_case_and_its_worker_survives() -> None:
    pool = shared_pool(DEFAULT)
    pool.warm()
    before = pool.pids
    got = {}
    for name, _, _code, overrides in CASES:
        try:
            parse_isolated(name, content(name), IngestSettings(**overrides))  # type: ignore[arg-type]
            got[name] = "ok"
        except IngestError as exc:
            got[name] = exc.code
    assert got == {name: code for name, _, code, _ in CASES}
    assert pool.pids == before  # no case crashed or wedged the worker
    assert parse_isolated("after.docx", docs.make_docx(), DEFAULT)


def test_huge_single_line_txt_parses_and_chunks_within_limits() -> None:
    data = docs.huge_line_txt(20 << 20)
    elements = parse_isolated("huge.txt", data, DEFAULT)
    assert sum(len(e.text) for e in elements) == len(data.strip())
    chunks = chunk_elements(elements, max_chars=DEFAULT.chunk_chars, overlap_chars=DEFAULT.chunk_overlap_chars)
    assert max(len(c.text) for c in chunks) <= DEFAULT.chunk_chars
    assert len(chunks) > len(data) // DEFAULT.chunk_chars


def test_a_bad_attachment_does_not_sink_the_email() -> None:
    mail = docs.make_eml(attachment=("evil.docx", docs.billion_laughs_docx()))
    text = "\n".join(e.text for e in parse_isolated("mail.eml", mail, DEFAULT))
    assert docs.SENTENCE in text and "Attachment: evil.docx" in text and "lol" not in text
