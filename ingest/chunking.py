"""Structure-following chunking of parsed elements.

Invariants (each has a test in tests/unit/test_chunking.py):
- no chunk is longer than ``max_chars``;
- ``section`` is the path of open titles joined by `` > ``; a title at depth d closes every open
  title at depth >= d, and the title text itself starts the first chunk of its section;
- a table is never packed with other elements: one that fits is one chunk, a larger one is split
  between rows with its header row repeated in every piece (a row that cannot fit is split like
  prose);
- inside one run of prose (between titles and tables) consecutive chunks share a tail/head of at
  most ``overlap_chars``, cut at sentence or word boundaries; nothing overlaps across a title or
  a table;
- every sentence of the input is in some chunk, in order; long sentences are split between words
  and only a word longer than ``max_chars`` is cut inside;
- the work is linear in the size of the text: a 20 MB single line is fine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ingest.parse import Element

_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_WHITESPACE = " \n\t"
SECTION_SEPARATOR = " > "


@dataclass(frozen=True)
class TextChunk:
    text: str
    section: str
    page: int | None  # page of the chunk's first new (non-overlap) text
    element_types: tuple[str, ...]


@dataclass(frozen=True)
class _Unit:
    """A sentence, or a piece of one that was too long, of one element."""

    text: str
    kind: str
    page: int | None
    opens_element: bool  # joined to what precedes it with a newline rather than a space


def chunk_elements(elements: list[Element], *, max_chars: int, overlap_chars: int) -> list[TextChunk]:
    if max_chars < 1 or overlap_chars < 0 or overlap_chars * 2 > max_chars:
        raise ValueError("need max_chars >= 1 and 0 <= overlap_chars <= max_chars / 2")
    chunks: list[TextChunk] = []
    path: list[tuple[int, str]] = []  # open titles as (depth, text)
    run: list[_Unit] = []

    def section() -> str:
        return SECTION_SEPARATOR.join(t for _, t in path)

    def flush() -> None:
        chunks.extend(_pack(run, section(), max_chars, overlap_chars))
        run.clear()

    for el in elements:
        text = el.text.strip()
        if not text:
            continue
        if el.kind == "Title":
            flush()
            while path and path[-1][0] >= el.depth:
                path.pop()
            path.append((el.depth, " ".join(text.split())[:200]))
        elif el.kind == "Table":
            flush()
            chunks.extend(_table_chunks(text, section(), el.page, max_chars))
            continue
        # Pieces leave room for the overlap, so a chunk can almost always start with one.
        run.extend(_units(text, el.kind, el.page, max_chars - overlap_chars, max_chars))
    flush()
    return chunks


def _units(text: str, kind: str, page: int | None, max_chars: int, hard_max: int) -> list[_Unit]:
    units: list[_Unit] = []
    for sentence in _SENTENCE.split(text):
        for piece in split_words(sentence, max_chars, hard_max):
            units.append(_Unit(piece, kind, page, opens_element=not units))
    return units


def _pack(units: list[_Unit], section: str, max_chars: int, overlap: int) -> list[TextChunk]:
    """Greedy packing; each chunk after the first starts with the previous chunk's tail."""
    out: list[TextChunk] = []
    cur: list[_Unit] = []
    carried = 0  # leading units of ``cur`` that repeat the previous chunk
    size = 0
    for unit in units:
        if cur and size + 1 + len(unit.text) > max_chars:
            if len(cur) > carried:  # never emit a chunk of overlap alone
                out.append(_make(cur, carried, section))
                cur = _tail(cur, overlap)
                carried, size = len(cur), _length(cur)
            while cur and size + 1 + len(unit.text) > max_chars:  # make room: shrink the overlap
                cur.pop(0)
                carried, size = len(cur), _length(cur)
        size += len(unit.text) + (1 if cur else 0)
        cur.append(unit)
    if len(cur) > carried:
        out.append(_make(cur, carried, section))
    return out


def _tail(units: list[_Unit], overlap: int) -> list[_Unit]:
    """The last units whose text fits in ``overlap``; else a word-aligned suffix of the last."""
    if overlap <= 0 or not units:
        return []
    tail: list[_Unit] = []
    size = -1
    for unit in reversed(units):
        if size + 1 + len(unit.text) > overlap:
            break
        tail.insert(0, unit)
        size += 1 + len(unit.text)
    if tail:
        return tail
    last = units[-1].text
    cuts = [i for i in (last.find(c, len(last) - overlap - 1) for c in _WHITESPACE) if i >= 0]
    suffix = last[min(cuts) + 1:] if cuts else last[-overlap:]
    return [_Unit(suffix, units[-1].kind, units[-1].page, opens_element=False)] if suffix else []


def _length(units: list[_Unit]) -> int:
    return sum(len(u.text) for u in units) + max(len(units) - 1, 0)


def _make(units: list[_Unit], carried: int, section: str) -> TextChunk:
    parts = []
    for i, unit in enumerate(units):
        if i:
            parts.append("\n" if unit.opens_element else " ")
        parts.append(unit.text)
    kinds = tuple(dict.fromkeys(u.kind for u in units[carried:]))
    return TextChunk("".join(parts), section, units[carried].page, kinds)


def _table_chunks(text: str, section: str, page: int | None, max_chars: int) -> list[TextChunk]:
    if len(text) <= max_chars:
        return [TextChunk(text, section, page, ("Table",))]
    rows = [r for r in text.split("\n") if r.strip()]
    header = rows[0]
    # A header that would eat most of every piece is kept once, not repeated.
    repeat = header if len(header) <= max_chars // 4 else None
    body = rows[1:] if repeat else rows
    pieces: list[str] = []
    cur: list[str] = [repeat] if repeat else []
    base = len(repeat) if repeat else 0  # size of a piece holding only the header
    size = base
    for row in body:
        if base + (1 if repeat else 0) + len(row) > max_chars:  # too long even next to the header alone
            if len(cur) > (1 if repeat else 0):
                pieces.append("\n".join(cur))
            pieces.extend(split_words(row, max_chars))
            cur, size = ([repeat] if repeat else []), base
            continue
        if cur and size + 1 + len(row) > max_chars:
            pieces.append("\n".join(cur))
            cur, size = ([repeat] if repeat else []), base
        size += len(row) + (1 if cur else 0)
        cur.append(row)
    if len(cur) > (1 if repeat else 0):
        pieces.append("\n".join(cur))
    return [TextChunk(p, section, page, ("Table",)) for p in pieces]


def split_words(text: str, max_chars: int, hard_max: int | None = None) -> list[str]:
    """Pieces of at most ``max_chars``, cut at the last whitespace that fits; a word longer than
    that becomes a piece of its own, and is cut inside only beyond ``hard_max`` (default:
    ``max_chars``). Whitespace at the cuts is dropped."""
    hard = max(hard_max or max_chars, max_chars)
    text = text.strip()
    pieces: list[str] = []
    start, n = 0, len(text)
    while start < n:
        if n - start <= max_chars:
            pieces.append(text[start:])
            break
        cut = max(text.rfind(c, start, start + max_chars + 1) for c in _WHITESPACE)
        if cut <= start:  # the next word alone is longer than max_chars
            ends = [i for i in (text.find(c, start, start + hard + 1) for c in _WHITESPACE) if i >= 0]
            cut = min(min(ends, default=n), start + hard)
        pieces.append(text[start:cut].rstrip())
        start = cut
        while start < n and text[start] in _WHITESPACE:
            start += 1
    return [p for p in pieces if p]
