"""Parse document bytes into structural elements with ``unstructured``, fully offline.

PDFs take a lean text-layer route (pypdf, one text partition per page) instead of
``unstructured[pdf]``, which would pull a CUDA torch; the element model stays the same.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import PurePosixPath

from core.errors import IngestError

SUPPORTED = {
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".eml": "message/rfc822",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".csv": "text/csv",
    ".pdf": "application/pdf",
}


@dataclass(frozen=True)
class Element:
    kind: str  # unstructured category: Title, NarrativeText, ListItem, Table, …
    text: str
    depth: int = 0  # heading depth for titles
    page: int | None = None


def offline_environment() -> None:
    """unstructured calls home and fetches models unless told not to; call before importing it."""
    os.environ["DO_NOT_TRACK"] = "1"
    os.environ["UNSTRUCTURED_DISABLE_NOTICE"] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("SCARF_NO_ANALYTICS", "true")


def content_type_for(filename: str) -> str:
    ext = PurePosixPath(filename).suffix.lower()
    if ext not in SUPPORTED:
        raise IngestError(f"unsupported file type {ext or '(none)'}", code="unsupported_type")
    return SUPPORTED[ext]


def parse(filename: str, content: bytes) -> list[Element]:
    """Elements of one document; raises ``IngestError`` with a stable code on bad input."""
    ctype = content_type_for(filename)
    if not content.strip():
        raise IngestError("file is empty", code="empty_file")
    offline_environment()
    try:
        if ctype == "application/pdf":
            elements = _parse_pdf(content)
        else:
            elements = _parse_unstructured(filename, content, ctype)
    except IngestError:
        raise
    except Exception as exc:  # parser libraries raise anything on corrupt input
        raise IngestError(f"could not parse {filename}: {type(exc).__name__}: {exc}"[:500], code="parse_failed") from exc
    elements = [e for e in elements if e.text.strip()]
    if not elements:
        raise IngestError("no text could be extracted", code="no_text")
    return elements


def _parse_unstructured(filename: str, content: bytes, ctype: str) -> list[Element]:
    from unstructured.partition.auto import partition

    raw = partition(file=io.BytesIO(content), metadata_filename=filename, content_type=ctype)
    out = []
    for el in raw:
        md = el.metadata
        text = el.text
        if el.category == "Table" and getattr(md, "text_as_html", None):
            text = el.text  # keep plain text for retrieval; the table stays one element
        out.append(Element(el.category, text, int(getattr(md, "category_depth", None) or 0), getattr(md, "page_number", None)))
    return out


def _parse_pdf(content: bytes) -> list[Element]:
    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError, PdfReadError
    from unstructured.partition.text import partition_text

    try:
        reader = PdfReader(io.BytesIO(content))
        if reader.is_encrypted:
            raise IngestError("PDF is encrypted", code="encrypted")
        out: list[Element] = []
        for number, page in enumerate(reader.pages, start=1):
            text = page.extract_text() or ""
            if text.strip():
                for el in partition_text(text=text):
                    out.append(Element(el.category, el.text, 0, number))
        return out
    except (FileNotDecryptedError,) as exc:
        raise IngestError("PDF is encrypted", code="encrypted") from exc
    except PdfReadError as exc:
        raise IngestError(f"corrupt PDF: {exc}", code="corrupt_file") from exc
