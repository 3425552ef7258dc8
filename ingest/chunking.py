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
- the work is linear in the size of the text: a 20 MB single line is fine;
- with ``min_chars`` > 0 a title closes the text before it only once that text holds body text
  (not titles alone) and at least ``min_chars`` characters; otherwise the title joins it, so a
  run of short titles or tiny sections is packed like prose instead of making a chunk each. A
  chunk's section is then the common path of its body text (of its titles when it has none),
  and overlap never reaches back into an earlier section;
- ``max_chunks``: chunking stops with ``too_many_chunks`` as soon as the count passes it, so a
  hostile file never builds the chunk list it asks for.

``chunk_document`` applies the ingestion settings (``IngestSettings``): the minimum size, the
per-document and per-input-MiB chunk caps and the element cap, each with its own error code.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from core.errors import IngestError
from core.settings import IngestSettings
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
    path: tuple[str, ...] = ()  # the open titles when the unit was read


MIB = 1024 * 1024


def chunk_document(elements: list[Element], settings: IngestSettings, *, input_bytes: int) -> list[TextChunk]:
    """Chunks of one parsed document under the ingestion settings; ``IngestError`` when a cap is hit:
    ``too_many_elements`` (``max_elements_per_document``), ``too_many_chunks``
    (``max_chunks_per_document``), ``chunk_amplification`` (``max_chunks_per_input_mb`` times the
    input's size in MiB, a file under 1 MiB counting as 1 MiB)."""
    if len(elements) > settings.max_elements_per_document:
        raise IngestError(f"{len(elements)} elements (limit {settings.max_elements_per_document})",
                          code="too_many_elements")
    per_doc = settings.max_chunks_per_document
    per_input = math.ceil(settings.max_chunks_per_input_mb * max(input_bytes, MIB) / MIB)
    try:
        return chunk_elements(elements, max_chars=settings.chunk_chars, overlap_chars=settings.chunk_overlap_chars,
                              min_chars=settings.min_chunk_chars, max_chunks=min(per_doc, per_input))
    except IngestError as exc:
        if exc.code == "too_many_chunks" and per_input < per_doc:
            raise IngestError(f"more than {per_input} chunks from {input_bytes} bytes "
                              f"(limit {settings.max_chunks_per_input_mb} per MiB)", code="chunk_amplification") from exc
        raise


def chunk_elements(elements: list[Element], *, max_chars: int, overlap_chars: int, min_chars: int = 0,
                   max_chunks: int | None = None) -> list[TextChunk]:
    if max_chars < 1 or overlap_chars < 0 or overlap_chars * 2 > max_chars:
        raise ValueError("need max_chars >= 1 and 0 <= overlap_chars <= max_chars / 2")
    if min_chars < 0:
        raise ValueError("need min_chars >= 0")
    chunks: list[TextChunk] = []
    path: list[tuple[int, str]] = []  # open titles as (depth, text)
    run: list[_Unit] = []
    run_chars = 0
    run_has_body = False

    def flush() -> None:
        nonlocal run_chars, run_has_body
        chunks.extend(_pack(run, max_chars, overlap_chars))
        run.clear()
        run_chars, run_has_body = 0, False
        if max_chunks is not None and len(chunks) > max_chunks:
            raise IngestError(f"more than {max_chunks} chunks", code="too_many_chunks")

    for el in elements:
        text = el.text.strip()
        if not text:
            continue
        if el.kind == "Title":
            # Tiny or title-only text is not worth a chunk of its own: it joins what follows.
            if min_chars == 0 or (run_has_body and run_chars >= min_chars):
                flush()
            while path and path[-1][0] >= el.depth:
                path.pop()
            path.append((el.depth, " ".join(text.split())[:200]))
        elif el.kind == "Table":
            flush()
            chunks.extend(_table_chunks(text, _join(t for _, t in path), el.page, max_chars))
            if max_chunks is not None and len(chunks) > max_chunks:
                raise IngestError(f"more than {max_chunks} chunks", code="too_many_chunks")
            continue
        else:
            run_has_body = True
        # Pieces leave room for the overlap, so a chunk can almost always start with one.
        units = _units(text, el.kind, el.page, max_chars - overlap_chars, max_chars, tuple(t for _, t in path))
        run.extend(units)
        run_chars += len(text)
    flush()
    return chunks


def _join(parts: Iterable[str]) -> str:
    return SECTION_SEPARATOR.join(parts)


def _units(text: str, kind: str, page: int | None, max_chars: int, hard_max: int,
           path: tuple[str, ...] = ()) -> list[_Unit]:
    units: list[_Unit] = []
    for sentence in _SENTENCE.split(text):
        for piece in split_words(sentence, max_chars, hard_max):
            units.append(_Unit(piece, kind, page, opens_element=not units, path=path))
    return units


def _pack(units: list[_Unit], max_chars: int, overlap: int) -> list[TextChunk]:
    """Greedy packing; each chunk after the first starts with the previous chunk's tail."""
    out: list[TextChunk] = []
    cur: list[_Unit] = []
    carried = 0  # leading units of ``cur`` that repeat the previous chunk
    size = 0
    for unit in units:
        if cur and size + 1 + len(unit.text) > max_chars:
            if len(cur) > carried:  # never emit a chunk of overlap alone
                out.append(_make(cur, carried))
                cur = _tail(cur, overlap)
                carried, size = len(cur), _length(cur)
            while cur and size + 1 + len(unit.text) > max_chars:  # make room: shrink the overlap
                cur.pop(0)
                carried, size = len(cur), _length(cur)
        size += len(unit.text) + (1 if cur else 0)
        cur.append(unit)
    if len(cur) > carried:
        out.append(_make(cur, carried))
    return out


def _tail(units: list[_Unit], overlap: int) -> list[_Unit]:
    """The last units whose text fits in ``overlap``; else a word-aligned suffix of the last.
    Only units of the last unit's section: overlap never reaches back across a title."""
    if overlap <= 0 or not units:
        return []
    tail: list[_Unit] = []
    size = -1
    for unit in reversed(units):
        if size + 1 + len(unit.text) > overlap or unit.path != units[-1].path:
            break
        tail.insert(0, unit)
        size += 1 + len(unit.text)
    if tail:
        return tail
    last = units[-1].text
    cuts = [i for i in (last.find(c, len(last) - overlap - 1) for c in _WHITESPACE) if i >= 0]
    suffix = last[min(cuts) + 1:] if cuts else last[-overlap:]
    return [_Unit(suffix, units[-1].kind, units[-1].page, opens_element=False, path=units[-1].path)] if suffix else []


def _length(units: list[_Unit]) -> int:
    return sum(len(u.text) for u in units) + max(len(units) - 1, 0)


def _make(units: list[_Unit], carried: int) -> TextChunk:
    parts = []
    for i, unit in enumerate(units):
        if i:
            parts.append("\n" if unit.opens_element else " ")
        parts.append(unit.text)
    new = units[carried:]
    kinds = tuple(dict.fromkeys(u.kind for u in new))
    return TextChunk("".join(parts), _section(new), new[0].page, kinds)


def _section(units: list[_Unit]) -> str:
    """The path shared by the chunk's body text (by its titles when it holds none): the whole
    path when nothing was merged, the common ancestor of merged tiny sections otherwise."""
    paths = [u.path for u in units if u.kind != "Title"] or [u.path for u in units]
    common = paths[0]
    for p in paths[1:]:
        if p != common:
            n = 0
            while n < min(len(p), len(common)) and p[n] == common[n]:
                n += 1
            common = common[:n]
    return _join(common)


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
