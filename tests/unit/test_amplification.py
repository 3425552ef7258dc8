"""Chunk amplification limits (issue #16): no file makes more chunks than its bytes justify.

Invariants: an e-mail body is chunked like the same text in a .txt (2,000 short lines are ~10
chunks, not 2,002); a run of short titles or tiny sections is packed like prose; each cap
(elements per document, chunks per document, chunks per input MiB) refuses the file with its own
code instead of building what it asks for."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from core.errors import IngestError
from core.settings import IngestSettings
from ingest.chunking import MIB, chunk_document, chunk_elements
from ingest.parse import ERROR_CODES, Element, parse

DEFAULT = IngestSettings()
BODY = "line\n" * 2000


def eml(body: str, subject: str = "Hello") -> bytes:
    return (f"From: Alice <alice@example.com>\nTo: bob@example.com\nSubject: {subject}\n"
            f"Date: Thu, 01 Oct 2026 09:00:00 +0000\nContent-Type: text/plain; charset=utf-8\n\n{body}").encode()


def test_email_body_of_2000_short_lines_is_at_most_10_chunks_like_the_same_txt() -> None:
    data = eml(BODY)
    chunks = chunk_document(parse("m.eml", data), DEFAULT, input_bytes=len(data))
    as_txt = chunk_document(parse("m.txt", BODY.encode()), DEFAULT, input_bytes=len(BODY))
    assert len(chunks) <= 10
    assert len(chunks) <= len(as_txt) + 1  # the subject is the only extra text
    assert all(c.section == "Hello" for c in chunks)  # the subject is the root section
    assert sum(c.text.count("line") for c in chunks) >= 2000  # nothing lost (overlap repeats some)


def test_email_headers_are_not_titles_and_body_lines_are_not_headings() -> None:
    els = parse("m.eml", eml("Short line\n\nAnother short line\n\nA sentence that ends.\n"))
    assert [e.kind for e in els] == ["Title", "NarrativeText", "NarrativeText", "NarrativeText"]
    assert not any("alice@example.com" in e.text for e in els)


def test_email_unnamed_text_parts_are_body_and_many_of_them_stay_few_chunks() -> None:
    parts = b"".join(b"--BB\nContent-Type: text/plain\n\nline %d\n" % i for i in range(3000))
    data = b'Subject: x\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="BB"\n\n' + parts + b"--BB--\n"
    chunks = chunk_document(parse("m.eml", data), DEFAULT, input_bytes=len(data))
    assert len(chunks) <= len(data) // 1000
    assert "line 2999" in chunks[-1].text


def test_thousands_of_attachments_we_cannot_parse_are_one_list_of_names_not_a_section_each() -> None:
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["Subject"] = "Exports"
    msg.set_content("See the attached exports.")
    for i in range(3000):
        msg.add_attachment(b"\0", maintype="application", subtype="octet-stream", filename=f"export-{i}.bin")
    data = bytes(msg)
    els = parse("exports.eml", data)
    assert sum(e.kind == "Title" for e in els) == 1  # the subject only
    chunks = chunk_elements(els, max_chars=1200, overlap_chars=150)  # even without merging
    assert len(chunks) <= len(data) // 5000
    assert "Attachment: export-2999.bin" in chunks[-1].text


def test_a_run_of_short_titles_is_packed_like_prose() -> None:
    els = [Element("Title", "line", 0)] * 2000
    legacy = chunk_elements(els, max_chars=1200, overlap_chars=150)
    merged = chunk_elements(els, max_chars=1200, overlap_chars=150, min_chars=200)
    assert len(legacy) == 2000
    assert len(merged) <= 10 and all(len(c.text) <= 1200 for c in merged)


def test_tiny_sections_merge_into_their_common_section_and_big_ones_stay_apart() -> None:
    els = [Element("Title", "Handbook", 0), Element("Title", "Travel", 1), Element("NarrativeText", "Short."),
           Element("Title", "Hotels", 1), Element("NarrativeText", "Tiny too."),
           Element("Title", "Leave", 1), Element("NarrativeText", "Twenty five days a year. " * 20)]
    chunks = chunk_elements(els, max_chars=1200, overlap_chars=0, min_chars=100)
    assert [c.section for c in chunks] == ["Handbook"]  # Travel and Hotels were tiny: merged
    assert chunks[0].text.startswith("Handbook\nTravel\nShort.\nHotels\nTiny too.\nLeave\n")
    # A heading chain with no text between (Handbook > Travel) takes the deepest path.
    chain = chunk_elements(els[:3] + [Element("NarrativeText", "Policy text. " * 20)] + els[3:],
                           max_chars=1200, overlap_chars=0, min_chars=100)
    assert chain[0].section == "Handbook > Travel"
    assert [c.section for c in chain[1:]] == ["Handbook"]  # Hotels (tiny) merged with Leave


def test_every_chunk_closed_by_a_title_holds_at_least_min_chars() -> None:
    els = [el for i in range(300) for el in (Element("Title", f"Heading {i}", 1), Element("NarrativeText", "Tiny body."))]
    chunks = chunk_elements(els, max_chars=1200, overlap_chars=100, min_chars=200)
    assert all(len(c.text) >= 200 for c in chunks[:-1])
    assert len(chunks) <= len(" ".join(e.text for e in els)) // 200 + 1


def test_overlap_never_reaches_back_into_a_merged_earlier_section() -> None:
    els = [Element("Title", "A", 0), Element("NarrativeText", "Alpha tiny."), Element("Title", "B", 0),
           Element("NarrativeText", " ".join(f"Beta sentence {i} ends here." for i in range(60)))]
    chunks = chunk_elements(els, max_chars=300, overlap_chars=100, min_chars=50)
    assert "Alpha" in chunks[0].text
    assert all("Alpha" not in c.text and not c.text.startswith("A\n") for c in chunks[1:])


@pytest.mark.parametrize("code", ["too_many_elements", "too_many_chunks", "chunk_amplification"])
def test_caps_codes_are_stable(code: str) -> None:
    assert code in ERROR_CODES


def test_max_chunks_per_document_refuses_with_its_code() -> None:
    text = " ".join(f"Sentence {i} of a long report ends here." for i in range(2000))  # ~80 KB, ~80 chunks
    els = [Element("NarrativeText", text)]
    assert len(chunk_document(els, DEFAULT, input_bytes=len(text))) > 50
    with pytest.raises(IngestError) as err:
        chunk_document(els, DEFAULT.model_copy(update={"max_chunks_per_document": 50}), input_bytes=len(text))
    assert err.value.code == "too_many_chunks"


def test_max_chunks_per_input_mb_counts_small_files_as_one_mib() -> None:
    text = " ".join(f"Sentence {i} of a long report ends here." for i in range(2000))
    els = [Element("NarrativeText", text)]
    limited = DEFAULT.model_copy(update={"max_chunks_per_input_mb": 50})
    with pytest.raises(IngestError) as err:
        chunk_document(els, limited, input_bytes=len(text))
    assert err.value.code == "chunk_amplification"
    # The same text from a 2 MiB input is allowed 100 chunks.
    assert chunk_document(els, limited, input_bytes=2 * MIB)


def test_chunking_stops_at_the_cap_instead_of_building_every_chunk() -> None:
    tables = [Element("Table", f"H\nrow {i}") for i in range(100_000)]
    with pytest.raises(IngestError) as err:
        chunk_elements(tables, max_chars=1200, overlap_chars=0, max_chunks=10)
    assert err.value.code == "too_many_chunks"


def test_max_elements_per_document_is_checked_by_the_parser_and_the_chunker() -> None:
    data = "\n\n".join(f"Paragraph {i}." for i in range(500)).encode()
    limited = DEFAULT.model_copy(update={"max_elements_per_document": 100})
    with pytest.raises(IngestError) as err:
        parse("many.txt", data, limited)
    assert err.value.code == "too_many_elements"
    els = parse("many.txt", data, DEFAULT)
    with pytest.raises(IngestError) as err:
        chunk_document(els, limited, input_bytes=len(data))
    assert err.value.code == "too_many_elements"
    many = eml("\n\n".join(f"Line {i}." for i in range(500)))
    with pytest.raises(IngestError) as err:
        parse("many.eml", many, limited)
    assert err.value.code == "too_many_elements"


def test_settings_reject_a_minimum_above_the_chunk_size() -> None:
    with pytest.raises(ValidationError):
        IngestSettings(chunk_chars=100, chunk_overlap_chars=10, min_chunk_chars=101)


_word = st.text(alphabet="abcdefgh", min_size=1, max_size=30)
_sentence = st.lists(_word, min_size=1, max_size=30).map(lambda ws: " ".join(ws) + ".")
_element = st.builds(Element, kind=st.sampled_from(["Title", "NarrativeText", "ListItem", "Table"]),
                     text=st.lists(_sentence, min_size=1, max_size=8).map(" ".join), depth=st.integers(0, 3),
                     page=st.none() | st.integers(1, 5))


@settings(max_examples=80, deadline=None)
@given(els=st.lists(_element, max_size=12), max_chars=st.integers(40, 400), overlap_pct=st.integers(0, 50),
       min_pct=st.integers(0, 100))
def test_property_merging_keeps_the_size_cap_and_every_word(els: list[Element], max_chars: int, overlap_pct: int,
                                                             min_pct: int) -> None:
    overlap = max_chars * overlap_pct // 100
    chunks = chunk_elements(els, max_chars=max_chars, overlap_chars=overlap, min_chars=max_chars * min_pct // 100)
    assert all(0 < len(c.text) <= max_chars for c in chunks)
    chunk_words = iter(w for c in chunks for w in c.text.replace("|", " ").split())
    assert all(any(w == c for c in chunk_words) for e in els for w in e.text.replace("|", " ").split())
