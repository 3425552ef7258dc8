"""Structure-following chunking: a title starts a new chunk and sets the section path; tables
stay whole where they fit; long runs split on element boundaries, then on sentences/words, with
a character overlap between consecutive pieces of one section.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ingest.parse import Element


@dataclass(frozen=True)
class TextChunk:
    text: str
    section: str
    page: int | None
    element_types: tuple[str, ...]


def chunk_elements(elements: list[Element], *, max_chars: int, overlap_chars: int) -> list[TextChunk]:
    chunks: list[TextChunk] = []
    path: list[tuple[int, str]] = []  # (depth, title)
    buf: list[Element] = []

    def section() -> str:
        return " > ".join(t for _, t in path)

    def flush() -> None:
        if buf:
            chunks.extend(_pack(buf, section(), max_chars, overlap_chars))
            buf.clear()

    for el in elements:
        if el.kind == "Title":
            flush()
            while path and path[-1][0] >= el.depth:
                path.pop()
            path.append((el.depth, el.text.strip()[:200]))
            buf.append(el)  # the heading text itself is searchable
            continue
        if el.kind == "Table":
            flush()
            chunks.extend(_pack([el], section(), max_chars, overlap_chars))
            continue
        buf.append(el)
    flush()
    return chunks


def _pack(els: list[Element], section: str, max_chars: int, overlap: int) -> list[TextChunk]:
    out: list[TextChunk] = []
    cur: list[Element] = []
    size = 0
    for el in els:
        if cur and size + len(el.text) + 1 > max_chars:
            out.append(_make(cur, section))
            cur, size = [], 0
        if len(el.text) > max_chars:
            for piece in _split_long(el.text, max_chars, overlap):
                out.append(TextChunk(piece, section, el.page, (el.kind,)))
            continue
        cur.append(el)
        size += len(el.text) + 1
    if cur:
        out.append(_make(cur, section))
    return out


def _make(els: list[Element], section: str) -> TextChunk:
    kinds = tuple(dict.fromkeys(e.kind for e in els))
    page = next((e.page for e in els if e.page is not None), None)
    return TextChunk("\n".join(e.text.strip() for e in els), section, page, kinds)


_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def _split_long(text: str, max_chars: int, overlap: int) -> list[str]:
    pieces: list[str] = []
    start = 0
    while start < len(text):
        end = min(len(text), start + max_chars)
        if end < len(text):
            cut = max(text.rfind(". ", start, end), text.rfind(" ", start, end))
            if cut > start + max_chars // 2:
                end = cut + 1
        pieces.append(text[start:end].strip())
        if end >= len(text):
            break
        start = max(end - overlap, start + 1)
    return [p for p in pieces if p]
