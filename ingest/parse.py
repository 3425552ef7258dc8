"""Parse document bytes into structural elements, fully offline.

``parse`` runs in the calling process; ``ingest.sandbox.parse_isolated`` runs the same function
in a resource-limited worker and is what untrusted content should go through.

Invariants:
- a bad file raises ``IngestError`` whose code is a key of ``ERROR_CODES``; nothing else escapes
  except ``MemoryError`` (the sandbox turns it into ``memory_limit``);
- content checks (``ingest.filecheck``) run before any parser touches the bytes;
- no network: ``offline_environment()`` runs before ``unstructured`` is imported, and the spaCy
  model comes from the local ``en_core_web_sm`` shim;
- a table is one element whose text is one line per row, cells joined by `` | ``.

Routes: PDFs take a text-layer route (pypdf, no OCR) instead of ``unstructured[pdf]``, which
would pull a CUDA torch; CSV goes through the stdlib reader (pandas rejects ragged rows); e-mail
attachments are parsed by ``parse`` itself, so they pass the same checks as a file would.
"""

from __future__ import annotations

import codecs
import csv
import email
import email.policy
import io
import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from email.message import EmailMessage, MIMEPart
from pathlib import PurePosixPath
from typing import Any

from core.errors import IngestError
from core.settings import IngestSettings
from ingest.filecheck import check

log = logging.getLogger(__name__)

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

ERROR_CODES = {
    "unsupported_type": "the extension is not one we parse",
    "empty_file": "no bytes, or only whitespace",
    "too_large": "over max_file_bytes; or one HTML/Markdown text block over 10 MB",
    "type_mismatch": "the content is another format than the extension says",
    "corrupt_file": "truncated, malformed, binary garbage, or nested too deeply to read",
    "encrypted": "password-protected PDF or Office file",
    "zip_bomb": "OOXML over the inflated-size, ratio or member caps; or a PDF stream bomb",
    "xml_bomb": "an OOXML part declares a DTD or entities",
    "no_text": "parsed, but holds no text (e.g. a scanned PDF: we do no OCR)",
    "parse_timeout": "the parse took longer than parse_timeout_s (sandbox only)",
    "memory_limit": "the parse needed more than parse_memory_bytes (sandbox only)",
    "parse_killed": "the parser process died, e.g. a crash in native code (sandbox only)",
    "unknown_charset": "the file declares a character set no codec knows (e-mail part, HTML)",
    "truncated_file": "a stream ends before its own structure says it does (negative seek, short read)",
    "zip_unsafe_name": "a zip entry name is absolute, climbs (..), has a drive letter, a backslash, a "
                       "control or bidi character, is empty, over-long, or repeats another entry",
    "zip_symlink": "a zip entry is a symlink or another special file (unix mode bits)",
    "zip_header_mismatch": "a zip entry's local header disagrees with the central directory",
    "zip_implausible": "zip counts, sizes or offsets cannot be true: entry counts that do not match "
                       "the central directory (zip64 claiming 2^40), entries outside the file or overlapping",
    "zip_trailing_data": "data outside the archive: after the end record, or a second archive before it",
    "too_many_elements": "parsing gave more than max_elements_per_document elements",
    "too_many_chunks": "chunking gave more than max_chunks_per_document chunks",
    "chunk_amplification": "more chunks than max_chunks_per_input_mb allows for the file's size",
    "parse_failed": "the parser raised something we did not anticipate",
}

# unstructured classifies every element with spaCy at ~40 µs a character (and ~1.5 KB of memory
# a character): a 1 MB paragraph takes 37 s and 3 GB. Text beyond this many characters is never
# a title, so the classifier sees at most this prefix of an element, and the plain-text route
# does not classify longer lines at all.
_CLASSIFY_MAX_CHARS = 5_000


@dataclass(frozen=True)
class Element:
    kind: str  # unstructured category: Title, NarrativeText, ListItem, Table, …
    text: str
    depth: int = 0  # heading depth for titles: a title closes every open title at depth >= its own
    page: int | None = None  # 1-based page (PDF) or slide (pptx) or sheet (xlsx)


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


def parse(filename: str, content: bytes, settings: IngestSettings | None = None) -> list[Element]:
    """Elements of one document, in reading order; raises ``IngestError`` on bad input."""
    return _parse(filename, content, settings or IngestSettings(), depth=0)


def _parse(filename: str, content: bytes, limits: IngestSettings, depth: int) -> list[Element]:
    ctype = content_type_for(filename)
    route = _ROUTES.get(ctype, _parse_unstructured)
    try:
        check(filename, content, limits)
        offline_environment()
        _bound_classifier()
        elements = route(filename, content, ctype, limits, depth)
    except (IngestError, MemoryError):
        raise
    except RecursionError as exc:
        raise IngestError(f"{filename} is nested too deeply to parse", code="corrupt_file") from exc
    except Exception as exc:  # parser libraries raise anything on bad input
        raise IngestError(f"could not parse {filename}: {type(exc).__name__}: {exc}"[:500],
                          code=_failure_code(exc)) from exc
    elements = [e for e in (_clean(e) for e in elements) if e.text]
    if not elements:
        raise IngestError("no text could be extracted", code="no_text")
    _check_element_count(len(elements), limits)
    return elements


def _check_element_count(count: int, limits: IngestSettings) -> None:
    # Checked where the elements are made (the sandbox worker), so an amplifying file is refused
    # before its elements cross the process boundary or reach the chunker.
    if count > limits.max_elements_per_document:
        raise IngestError(f"more than {limits.max_elements_per_document} elements", code="too_many_elements")


_classifier_bounded = False


def _bound_classifier() -> None:
    """Make unstructured's own heuristics cut text at ``_CLASSIFY_MAX_CHARS`` (they already cut
    at the spaCy model's ``max_length``, 1,000,000 by default). Reaches a private function of
    unstructured 0.27; if it moves, huge paragraphs in HTML/Markdown/Office files are only slow
    (the sandbox timeout still bounds them) and everything else is unchanged."""
    global _classifier_bounded
    if _classifier_bounded:
        return
    _classifier_bounded = True
    try:
        from unstructured.nlp import tokenize

        tokenize._get_nlp().max_length = _CLASSIFY_MAX_CHARS
    except Exception as exc:  # pragma: no cover - depends on unstructured internals
        log.warning("parse.classifier_unbounded error=%s", exc)


_TRUNCATION = ("negative seek value", "truncated", "unexpected end", "premature end", "end of stream",
               "unpack requires a buffer")


def _failure_code(exc: Exception) -> str:
    """The per-file code for an exception a parser library raised on bad input."""
    import struct
    import zipfile

    from lxml.etree import XMLSyntaxError

    if isinstance(exc, (zipfile.BadZipFile, XMLSyntaxError, UnicodeError, EOFError, csv.Error)):
        return "corrupt_file"
    message = str(exc).lower()
    # codecs.lookup raises a bare LookupError("unknown encoding: x"); KeyError and IndexError are
    # LookupErrors too, and are parser bugs or corruption, not charsets.
    if type(exc) is LookupError or (isinstance(exc, LookupError) and "unknown encoding" in message):
        return "unknown_charset"
    if isinstance(exc, struct.error) or (isinstance(exc, (ValueError, OSError))
                                         and any(m in message for m in _TRUNCATION)):
        return "truncated_file"
    return "parse_failed"


def _clean(el: Element) -> Element:
    text = el.text.replace("\x00", "").strip()
    return el if text == el.text else replace(el, text=text)


# -- routes --------------------------------------------------------------------------------------

Route = Callable[[str, bytes, str, IngestSettings, int], list[Element]]


def _parse_unstructured(filename: str, content: bytes, ctype: str, limits: IngestSettings, depth: int) -> list[Element]:
    from unstructured.partition.auto import partition

    return list(_convert(partition(file=io.BytesIO(content), metadata_filename=filename, content_type=ctype)))


# libxml2 (under unstructured's HTML and Markdown partitioners) silently drops a text node
# longer than this unless asked for "huge" trees; refusing is better than losing the text.
_LIBXML_TEXT_LIMIT = 10_000_000


def _parse_markup(filename: str, content: bytes, ctype: str, limits: IngestSettings, depth: int) -> list[Element]:
    longest = _long_run(content, b"<" if ctype == "text/html" else b"\n\n", _LIBXML_TEXT_LIMIT)
    if longest:
        raise IngestError(f"a single text block of {longest} bytes exceeds the parser's "
                          f"{_LIBXML_TEXT_LIMIT}-byte limit", code="too_large")
    return _parse_unstructured(filename, content, ctype, limits, depth)


def _long_run(content: bytes, separator: bytes, limit: int) -> int:
    """Length of a run without ``separator`` longer than ``limit``, or 0. Any such run covers a
    whole block of ``limit // 2`` aligned bytes, so a few C-speed finds suffice."""
    half = max(limit // 2, 1)
    for start in range(0, len(content) - half + 1, half):
        if content.find(separator, start, start + half) == -1:
            left = content.rfind(separator, 0, start) + 1
            right = content.find(separator, start + half)
            run = (len(content) if right == -1 else right) - left
            if run > limit:
                return run
    return 0


def _parse_xlsx(filename: str, content: bytes, ctype: str, limits: IngestSettings, depth: int) -> list[Element]:
    """Each sheet becomes a section named after it."""
    from unstructured.partition.auto import partition

    out: list[Element] = []
    sheet = None
    for raw, el in _pairs(partition(file=io.BytesIO(content), metadata_filename=filename, content_type=ctype)):
        name = getattr(raw.metadata, "page_name", None)
        if name and name != sheet:
            sheet = name
            out.append(Element("Title", str(name), 0, el.page))
        out.append(replace(el, depth=el.depth + 1))
    return out


def _parse_text(filename: str, content: bytes, ctype: str, limits: IngestSettings, depth: int) -> list[Element]:
    text = _decode(content)
    if limits.plain_text_elements == "unstructured":
        return _text_elements(text)
    return _paragraph_elements(text)


_TERMINAL = tuple(".!?:;,")


def _paragraph_elements(text: str, *, headings: bool = True) -> list[Element]:
    """Plain text without NLP: blank lines separate paragraphs; a lone short line without closing
    punctuation that is followed by more text is a heading (Title) unless ``headings`` is off,
    the rest is narrative."""
    paragraphs = [" ".join(line.strip() for line in block.splitlines() if line.strip())
                  for block in re.split(r"\n\s*\n", text)]
    paragraphs = [p for p in paragraphs if p]
    out = []
    for i, p in enumerate(paragraphs):
        heading = (headings and i + 1 < len(paragraphs) and len(p) <= 120 and "\n" not in p
                   and not p.endswith(_TERMINAL) and len(p.split()) <= 14)
        out.append(Element("Title" if heading else "NarrativeText", p))
    return out


def _parse_csv(filename: str, content: bytes, ctype: str, limits: IngestSettings, depth: int) -> list[Element]:
    text = _decode(content)
    try:
        dialect: Any = csv.Sniffer().sniff(text[:65536], delimiters=_DELIMITERS)
    except csv.Error:  # ragged rows defeat the sniffer; the header line rarely lies
        header = next((line for line in text[:65536].splitlines() if line.strip()), "")
        delimiter = max(_DELIMITERS, key=header.count) if any(d in header for d in _DELIMITERS) else ","
        dialect = type("Sniffed", (csv.excel,), {"delimiter": delimiter})
    # The default 128 KiB field cap would reject one long cell; the file size already bounds it.
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
    rows = [" | ".join(c.strip() for c in row) for row in csv.reader(io.StringIO(text), dialect)]
    return [Element("Table", "\n".join(r for r in rows if r.strip(" |")))]


_DELIMITERS = ",;\t|"


def _parse_pdf(filename: str, content: bytes, ctype: str, limits: IngestSettings, depth: int) -> list[Element]:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, LimitReachedError, PdfReadError, PyPdfError

    try:
        reader = PdfReader(io.BytesIO(content))
        # An empty user password is how "no password to open, restrictions only" PDFs are made.
        if reader.is_encrypted and not reader.decrypt(""):
            raise IngestError("PDF is password-protected", code="encrypted")
        out: list[Element] = []
        for number, page in enumerate(reader.pages, start=1):
            out.extend(_text_elements(page.extract_text() or "", page=number))
        return out
    except (FileNotDecryptedError, DependencyError, NotImplementedError) as exc:  # e.g. an unknown cipher
        raise IngestError(f"PDF is encrypted: {exc}", code="encrypted") from exc
    except LimitReachedError as exc:
        code = "zip_bomb" if "decompress" in str(exc) else "corrupt_file"
        raise IngestError(f"PDF exceeds a parser safety limit: {exc}", code=code) from exc
    except (PdfReadError, PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        # pypdf surfaces malformed objects as assorted built-in errors as well as its own
        raise IngestError(f"corrupt PDF: {type(exc).__name__}: {exc}"[:500], code="corrupt_file") from exc


def _parse_email(filename: str, content: bytes, ctype: str, limits: IngestSettings, depth: int) -> list[Element]:
    """Subject as the root title, the body under it as plain text, then each attachment as a
    section of its own.

    Headers are metadata, not text, and a body is chunked like plain text: no line of it is a
    heading. (unstructured's e-mail partitioner classified every short body line as a title, and
    each title opened a chunk: 2,000 lines of ``line`` made 2,002 chunks.) Unnamed text parts
    beside the body are more body. Attachments go through ``_parse`` (not unstructured's
    ``process_attachments``, which would skip our bomb checks and route PDFs to the missing
    ``unstructured[pdf]``)."""
    msg: EmailMessage = email.message_from_bytes(content, policy=email.policy.default)  # type: ignore[assignment]
    out: list[Element] = []
    subject = str(msg.get("Subject", "") or "").strip()
    if subject:
        out.append(Element("Title", subject, 0))
    body = msg.get_body(preferencelist=("plain", "html"))
    if body is not None:
        out.extend(replace(el, depth=1) for el in _email_text(body, limits, depth))
    named: list[str] = []  # attachments we can only name: listed together, not a section each
    sections: list[Element] = []
    for part in msg.iter_attachments():
        if part.get_filename():
            parsed = _attachment(part, limits, depth)
            if parsed:
                sections.extend(parsed)
            else:
                named.append(PurePosixPath(part.get_filename() or "").name)
        elif part.get_content_maintype() == "text":
            out.extend(replace(el, depth=1) for el in _email_text(part, limits, depth))
        # an unnamed non-text part holds nothing to find, not even a name
        _check_element_count(len(out) + len(sections) + (1 if named else 0), limits)
    if named:
        out.append(Element("NarrativeText", "\n".join(f"Attachment: {n}" for n in named), 1))
    return out + sections


def _email_text(part: MIMEPart, limits: IngestSettings, depth: int) -> list[Element]:
    """One text part as plain-text paragraphs (HTML through its parser, then flattened: tables
    stay tables, nothing else is a title)."""
    try:
        text = part.get_content()
    except LookupError as exc:  # the part names a charset no codec knows
        raise IngestError(f"e-mail part declares an unknown charset: {exc}"[:500], code="unknown_charset") from exc
    if not isinstance(text, str):
        return []
    if part.get_content_subtype() != "html":
        return _paragraph_elements(text, headings=False)
    data = text.encode("utf-8")
    if _long_run(data, b"<", _LIBXML_TEXT_LIMIT):
        raise IngestError(f"an HTML body has a text block over {_LIBXML_TEXT_LIMIT} bytes", code="too_large")
    from unstructured.partition.html import partition_html

    return [el if el.kind == "Table" else replace(el, kind="NarrativeText", depth=0)
            for el in _convert(partition_html(text=text))]


def _attachment(part: EmailMessage, limits: IngestSettings, depth: int) -> list[Element]:
    """A parsed attachment as a section (``Attachment: name`` > its elements); [] when it is
    not parsed: too deep, a type we do not parse, or bad (a bad attachment must not cost the
    message its body). The caller still lists its name, which is worth finding."""
    name = PurePosixPath(part.get_filename() or "attachment").name
    if depth >= limits.max_attachment_depth or PurePosixPath(name).suffix.lower() not in SUPPORTED:
        return []
    try:
        payload = part.get_content()
        data = bytes(payload) if isinstance(payload, EmailMessage) else payload
        data = data.encode("utf-8") if isinstance(data, str) else data
        inner = _parse(name, data, limits, depth + 1)
    except IngestError:
        return []
    except (KeyError, LookupError, ValueError, TypeError):  # no content manager for the part
        return []
    return [Element("Title", f"Attachment: {name}", 1), *(replace(el, depth=el.depth + 2) for el in inner)]


_ROUTES: dict[str, Route] = {
    "text/plain": _parse_text,
    "text/html": _parse_markup,
    "text/markdown": _parse_markup,
    "text/csv": _parse_csv,
    "application/pdf": _parse_pdf,
    "message/rfc822": _parse_email,
    SUPPORTED[".xlsx"]: _parse_xlsx,
}


# -- helpers -------------------------------------------------------------------------------------


def _text_elements(text: str, page: int | None = None) -> list[Element]:
    """unstructured's text partitioner, except that over-long lines bypass its classifier."""
    from unstructured.partition.text import partition_text

    out: list[Element] = []
    short: list[str] = []

    def flush() -> None:
        if short:
            out.extend(replace(e, page=page) for e in _convert(partition_text(text="".join(short))))
            short.clear()

    for line in text.splitlines(keepends=True):
        if len(line) > _CLASSIFY_MAX_CHARS:
            flush()
            out.append(Element("NarrativeText", line.strip(), 0, page))
        else:
            short.append(line)
    flush()
    return out


def _pairs(raw: Iterable[Any]) -> Iterable[tuple[Any, Element]]:
    for el in raw:
        md = el.metadata
        text = _table_text(el) if el.category == "Table" else el.text
        yield el, Element(el.category, text or "", int(getattr(md, "category_depth", None) or 0),
                          getattr(md, "page_number", None))


def _convert(raw: Iterable[Any]) -> Iterable[Element]:
    return (el for _, el in _pairs(raw))


def _table_text(el: Any) -> str:
    """One line per row, cells joined by `` | ``: rows stay recognisable after chunking."""
    html = getattr(el.metadata, "text_as_html", None)
    if not html:
        return str(el.text or "")
    from lxml import html as lxml_html

    rows = []
    for tr in lxml_html.fragment_fromstring(html, create_parent="div").iter("tr"):
        cells = [" ".join(td.text_content().split()) for td in tr if td.tag in ("td", "th")]
        if any(cells):
            rows.append(" | ".join(cells))
    return "\n".join(rows) or str(el.text or "")


_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def _decode(content: bytes) -> str:
    for bom, encoding in _BOMS:
        if content.startswith(bom):
            return content.decode(encoding, errors="replace")
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        from charset_normalizer import from_bytes

        best = from_bytes(content[:262144]).best()
        if best is not None:
            return content.decode(best.encoding, errors="replace")
    except (ImportError, LookupError):
        pass
    return content.decode("cp1252", errors="replace")

