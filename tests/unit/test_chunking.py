"""Chunking invariants (see ingest/chunking.py): size cap, section paths, whole tables, overlap,
no lost sentences, linear time on huge input."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.chunking import chunk_elements, split_words
from ingest.parse import Element


def sentences(prefix: str, n: int) -> str:
    return " ".join(f"{prefix} sentence number {i} ends here." for i in range(n))


def test_titles_become_section_paths_and_deeper_titles_nest() -> None:
    els = [
        Element("Title", "Handbook", 0),
        Element("NarrativeText", "Welcome to the company."),
        Element("Title", "Travel", 1),
        Element("NarrativeText", "Book economy class."),
        Element("Title", "Hotels", 2),
        Element("NarrativeText", "Two hundred euros a night."),
        Element("Title", "Leave", 1),  # closes Travel and Hotels
        Element("NarrativeText", "Twenty five days a year."),
        Element("Title", "Appendix", 0),  # closes everything
        Element("NarrativeText", "Forms."),
    ]
    chunks = chunk_elements(els, max_chars=500, overlap_chars=0)
    assert [(c.section, c.text) for c in chunks] == [
        ("Handbook", "Handbook\nWelcome to the company."),
        ("Handbook > Travel", "Travel\nBook economy class."),
        ("Handbook > Travel > Hotels", "Hotels\nTwo hundred euros a night."),
        ("Handbook > Leave", "Leave\nTwenty five days a year."),
        ("Appendix", "Appendix\nForms."),
    ]
    assert chunks[0].element_types == ("Title", "NarrativeText")


def test_text_before_any_title_has_an_empty_section() -> None:
    chunks = chunk_elements([Element("NarrativeText", "Preamble."), Element("Title", "One")], max_chars=100, overlap_chars=0)
    assert [c.section for c in chunks] == ["", "One"]


def test_small_elements_pack_together_up_to_the_limit() -> None:
    els = [Element("NarrativeText", f"Paragraph {i} is short.") for i in range(10)]
    chunks = chunk_elements(els, max_chars=100, overlap_chars=0)
    assert all(len(c.text) <= 100 for c in chunks)
    assert len(chunks) == 3  # 21-22 chars each, newline-joined: four fit in 100
    assert "\n".join(c.text for c in chunks) == "\n".join(e.text for e in els)


def test_table_that_fits_is_one_chunk_never_mixed_with_prose() -> None:
    table = "Region | Cap\nBerlin | 210\nParis | 230"
    els = [Element("NarrativeText", "Before."), Element("Table", table), Element("NarrativeText", "After.")]
    chunks = chunk_elements(els, max_chars=1000, overlap_chars=100)
    assert [c.text for c in chunks] == ["Before.", table, "After."]
    assert chunks[1].element_types == ("Table",)


def test_large_table_splits_between_rows_and_repeats_the_header() -> None:
    header = "Region | Cap | Currency"
    rows = [f"City{i:03d} | {100 + i} | EUR" for i in range(200)]
    chunks = chunk_elements([Element("Table", "\n".join([header, *rows]), page=4)], max_chars=300, overlap_chars=50)
    assert len(chunks) > 1
    seen = []
    for c in chunks:
        assert len(c.text) <= 300
        lines = c.text.split("\n")
        assert lines[0] == header
        assert all(line in rows for line in lines[1:])  # whole rows only
        seen.extend(lines[1:])
        assert (c.page, c.element_types) == (4, ("Table",))
    assert seen == rows  # every row once, in order, no overlap between table pieces


def test_table_row_longer_than_the_limit_is_split_like_prose() -> None:
    table = "A | B\n" + "x | " + "word " * 100 + "\nshort | row"
    chunks = chunk_elements([Element("Table", table)], max_chars=120, overlap_chars=0)
    assert all(len(c.text) <= 120 for c in chunks)
    assert chunks[-1].text == "A | B\nshort | row"


def test_consecutive_chunks_of_one_section_overlap_at_sentence_boundaries() -> None:
    text = sentences("Alpha", 40)
    chunks = chunk_elements([Element("NarrativeText", text)], max_chars=200, overlap_chars=60)
    assert len(chunks) > 3
    for a, b in zip(chunks, chunks[1:]):
        shared = next(k for k in range(min(len(a.text), len(b.text)), -1, -1) if a.text.endswith(b.text[:k]))
        assert 0 < shared <= 60
        assert b.text[:shared].endswith("here.")  # whole sentences carried over
        assert len(b.text) <= 200


def test_no_overlap_across_titles_or_tables() -> None:
    els = [Element("NarrativeText", sentences("One", 10)), Element("Title", "Next", 0),
           Element("NarrativeText", sentences("Two", 10)), Element("Table", "H\nrow"),
           Element("NarrativeText", sentences("Three", 10))]
    chunks = chunk_elements(els, max_chars=150, overlap_chars=60)
    starts = [c.text.split(" ")[0] for c in chunks]
    assert starts.count("Next\nTwo") == 1
    after_title = next(i for i, c in enumerate(chunks) if c.text.startswith("Next"))
    assert "One" not in chunks[after_title].text
    after_table = next(i for i, c in enumerate(chunks) if c.text == "H\nrow") + 1
    assert chunks[after_table].text.startswith("Three sentence number 0")


def test_overlap_zero_means_disjoint_chunks() -> None:
    text = sentences("Beta", 30)
    chunks = chunk_elements([Element("NarrativeText", text)], max_chars=150, overlap_chars=0)
    assert " ".join(c.text for c in chunks) == text


def test_long_sentence_splits_between_words_and_giant_word_is_cut() -> None:
    words = " ".join(f"w{i}" for i in range(500))
    chunks = chunk_elements([Element("NarrativeText", words)], max_chars=100, overlap_chars=20)
    assert all(len(c.text) <= 100 for c in chunks)
    assert all(not c.text.startswith(" ") and not c.text.endswith(" ") for c in chunks)
    tokens = [t for c in chunks for t in c.text.split()]
    assert set(tokens) == set(words.split())  # no word lost or cut
    giant = "x" * 1050
    pieces = split_words(giant, 100)
    assert "".join(pieces) == giant and max(map(len, pieces)) == 100


def test_page_is_the_page_of_the_first_new_text() -> None:
    els = [Element("NarrativeText", sentences("Page one", 5), page=1),
           Element("NarrativeText", sentences("Page two", 5), page=2)]
    chunks = chunk_elements(els, max_chars=200, overlap_chars=0)
    assert chunks[0].page == 1 and chunks[-1].page == 2
    for c in chunks:
        assert c.text.startswith(f"Page {'one' if c.page == 1 else 'two'}")


def test_huge_single_line_is_chunked_in_linear_time() -> None:
    line = ("lorem ipsum dolor sit amet consectetur " * 550_000)[:20_000_000]  # 20 MB, no sentence end
    started = time.perf_counter()
    chunks = chunk_elements([Element("NarrativeText", line)], max_chars=1200, overlap_chars=150)
    assert time.perf_counter() - started < 10
    assert max(len(c.text) for c in chunks) <= 1200
    assert len(chunks) == pytest.approx(20_000_000 / (1200 - 150), rel=0.1)


def test_huge_text_without_any_whitespace_is_cut_in_linear_time() -> None:
    blob = "x" * 5_000_000
    started = time.perf_counter()
    chunks = chunk_elements([Element("NarrativeText", blob)], max_chars=1000, overlap_chars=100)
    assert time.perf_counter() - started < 5
    assert max(len(c.text) for c in chunks) <= 1000


def test_a_word_that_fits_a_chunk_is_never_cut_to_make_room_for_overlap() -> None:
    word = "Donaudampfschifffahrtsgesellschaftskapitaen"  # 43 chars; pieces aim at 60 - 25 = 35
    chunks = chunk_elements([Element("NarrativeText", f"short words then {word} and more words after it")],
                            max_chars=60, overlap_chars=25)
    assert any(word in c.text for c in chunks)


def test_settings_reject_overlap_that_leaves_no_room() -> None:
    from pydantic import ValidationError

    from core.settings import IngestSettings

    with pytest.raises(ValidationError):
        IngestSettings(chunk_chars=100, chunk_overlap_chars=60)
    with pytest.raises(ValueError):
        chunk_elements([], max_chars=100, overlap_chars=60)


_word = st.text(alphabet="abcdefgh", min_size=1, max_size=30)
_sentence = st.lists(_word, min_size=1, max_size=30).map(lambda ws: " ".join(ws) + ".")
_element = st.builds(
    Element,
    kind=st.sampled_from(["Title", "NarrativeText", "ListItem", "Table"]),
    text=st.lists(_sentence, min_size=1, max_size=8).map(" ".join),
    depth=st.integers(0, 3),
    page=st.none() | st.integers(1, 5),
)


@settings(max_examples=80, deadline=None)
@given(els=st.lists(_element, max_size=12), max_chars=st.integers(40, 400), overlap_pct=st.integers(0, 50))
def test_property_size_cap_and_no_lost_words(els: list[Element], max_chars: int, overlap_pct: int) -> None:
    overlap = max_chars * overlap_pct // 100
    chunks = chunk_elements(els, max_chars=max_chars, overlap_chars=overlap)
    assert all(0 < len(c.text) <= max_chars for c in chunks)
    chunk_words = [w for c in chunks for w in c.text.replace("|", " ").split()]
    input_words = [w for e in els for w in e.text.replace("|", " ").split()]
    # every word survives; words longer than the limit are the only ones cut (none here: <= 31)
    remaining = iter(chunk_words)
    assert all(any(w == c for c in remaining) for w in input_words)  # in order, as a subsequence
