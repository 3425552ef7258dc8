"""Every supported format, generated at test time, parsed in-process: known sentences come out,
titles become section paths, PDFs carry page numbers, tables stay tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import IngestSettings
from ingest.chunking import chunk_elements
from ingest.parse import Element, parse
from tests import fixtures_docs as docs


def parsed(path: Path) -> list[Element]:
    return parse(path.name, path.read_bytes(), IngestSettings())


def text_of(elements: list[Element]) -> str:
    return "\n".join(e.text for e in elements)


def sections(elements: list[Element]) -> dict[str, str]:
    """section path → text of its chunks."""
    out: dict[str, str] = {}
    for c in chunk_elements(elements, max_chars=1200, overlap_chars=0):
        out[c.section] = out.get(c.section, "") + c.text
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return docs.write_all(tmp_path_factory.mktemp("formats"))


@pytest.mark.parametrize("name", sorted(docs.BENIGN))
def test_known_text_comes_out(files: dict[str, Path], name: str) -> None:
    text = text_of(parsed(files[name]))
    if name.endswith((".csv", ".xlsx")):
        assert "Berlin | 210 | EUR" in text
    elif name.endswith(".pdf"):
        assert docs.PDF_PAGES[0][0] in text and docs.PDF_PAGES[1][1] in text
    else:
        assert docs.SENTENCE in text
        assert docs.SENTENCE_2 in text


@pytest.mark.parametrize("name", ["policy.md", "policy.html", "policy.docx"])
def test_headings_become_nested_section_paths(files: dict[str, Path], name: str) -> None:
    by_section = sections(parsed(files[name]))
    nested = f"{docs.TITLE} > {docs.SECTION}"
    assert nested in by_section
    assert docs.SENTENCE in by_section[nested]
    assert "Intro paragraph" in by_section[docs.TITLE]


def test_pptx_slide_titles_are_sections_and_slides_are_pages(files: dict[str, Path]) -> None:
    els = parsed(files["deck.pptx"])
    chunks = chunk_elements(els, max_chars=1200, overlap_chars=0)
    assert [(c.section, c.page) for c in chunks] == [(docs.TITLE, 1), (docs.SECTION, 2)]
    assert docs.SENTENCE_2 in chunks[1].text


def test_pdf_text_carries_page_numbers(files: dict[str, Path]) -> None:
    els = parsed(files["report.pdf"])
    pages = {e.page for e in els}
    assert pages == {1, 2}
    for page, lines in enumerate(docs.PDF_PAGES, start=1):
        page_text = " ".join(e.text for e in els if e.page == page)
        assert all(line in page_text for line in lines)


def test_pdf_encrypted_with_empty_user_password_opens() -> None:
    els = parse("owner-only.pdf", docs.owner_only_pdf())
    assert docs.PDF_PAGES[0][0] in text_of(els)


@pytest.mark.parametrize("name", ["caps.csv", "caps.xlsx", "policy.html", "policy.docx"])
def test_tables_are_single_elements_with_one_line_per_row(files: dict[str, Path], name: str) -> None:
    tables = [e for e in parsed(files[name]) if e.kind == "Table"]
    assert len(tables) == 1
    assert tables[0].text.split("\n") == [" | ".join(r) for r in docs.TABLE_ROWS]


def test_xlsx_sheet_name_is_the_section(files: dict[str, Path]) -> None:
    chunks = chunk_elements(parsed(files["caps.xlsx"]), max_chars=1200, overlap_chars=0)
    table = next(c for c in chunks if c.element_types == ("Table",))
    assert table.section == "Caps"


def test_csv_survives_ragged_rows_and_semicolons() -> None:
    els = parse("ragged.csv", b"name;amount\nalice;10;extra\nbob\n")
    assert els[0].text.split("\n") == ["name | amount", "alice | 10 | extra", "bob"]


def test_eml_subject_is_the_root_section_and_attachment_content_is_parsed(files: dict[str, Path]) -> None:
    els = parsed(files["announcement.eml"])
    by_section = sections(els)
    assert docs.SENTENCE in by_section[docs.TITLE] or any(
        docs.SENTENCE in t for s, t in by_section.items() if s.startswith(docs.TITLE))
    attachment = f"{docs.TITLE} > Attachment: audit-report.docx > Audit Report"
    assert docs.ATTACHMENT_SENTENCE in by_section[attachment]


def test_eml_with_bad_or_unsupported_attachment_keeps_body_and_names_it() -> None:
    for name, data in [("evil.docx", docs.zip_bomb(docs.make_docx(), member_bytes=8 << 20)), ("tool.exe", b"MZ\x90\0")]:
        text = text_of(parse("mail.eml", docs.make_eml(attachment=(name, data))))
        assert docs.SENTENCE in text
        assert f"Attachment: {name}" in text


def test_text_attachment_is_parsed_too() -> None:
    els = parse("mail.eml", docs.make_eml(attachment=("notes.txt", b"The vendor invoice was paid in full.\n")))
    assert "The vendor invoice was paid in full." in text_of(els)


def test_utf16_and_latin1_text_decode() -> None:
    assert docs.SENTENCE in text_of(parse("u16.txt", docs.make_txt().decode().encode("utf-16")))
    assert "Café prices rose." in text_of(parse("latin.txt", "Café prices rose.\n".encode("latin-1")))
