"""Checks on raw bytes before any parser sees them: size, emptiness, whether the content is what
the extension claims, encryption, and zip/XML bombs in OOXML containers.

Invariants:
- every rejection is an ``IngestError`` with a stable code (see ``ingest.parse``);
- nothing here inflates more than ``ooxml_max_uncompressed_bytes`` or holds more than one
  1 MiB block of an inflated member in memory at a time;
- an OOXML file that passes has a sound zip structure (``ingest.zipcheck``, checked on the raw
  bytes before any zip library opens it), declared sizes within the caps, the main part of the
  format its extension names, and no DOCTYPE/ENTITY declaration in any part a parser may read
  as XML.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from pathlib import PurePosixPath
from xml.etree import ElementTree

from core.errors import IngestError
from core.settings import IngestSettings
from ingest.zipcheck import check_zip

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_MAGIC = [  # (prefix, kind) for content that is certainly not text
    (b"%PDF-", "pdf"), (b"PK\x03\x04", "zip"), (b"PK\x05\x06", "zip"), (OLE_MAGIC, "ole"),
    (b"\x89PNG", "png"), (b"\xff\xd8\xff", "jpeg"), (b"GIF8", "gif"), (b"\x7fELF", "elf"),
    (b"\x1f\x8b", "gzip"), (b"7z\xbc\xaf", "7z"), (b"Rar!", "rar"),
]
OOXML_MAIN = {  # extension → the part every such file must hold
    ".docx": "word/document.xml", ".pptx": "ppt/presentation.xml", ".xlsx": "xl/workbook.xml",
}
TEXT_EXTENSIONS = {".txt", ".md", ".markdown", ".html", ".htm", ".eml", ".csv"}
_RATIO_FLOOR = 1024 * 1024  # small members compress wildly (empty sheets); only big ones count
_BLOCK = 1024 * 1024
_BOMS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))
_DECL = [p.encode(enc) for p in ("<!doctype", "<!entity") for enc in ("ascii", "utf-16-le", "utf-16-be")]


def sniff(content: bytes) -> str | None:
    """The container kind the leading bytes prove, or None."""
    for prefix, kind in _MAGIC:
        if content.startswith(prefix):
            return kind
    if b"%PDF-" in content[:1024]:  # readers accept junk before the header
        return "pdf"
    return None


def check(filename: str, content: bytes, limits: IngestSettings) -> None:
    """Raise ``IngestError`` unless ``content`` is safe to hand to the parser for its extension."""
    ext = PurePosixPath(filename).suffix.lower()
    if len(content) > limits.max_file_bytes:
        raise IngestError(f"file exceeds {limits.max_file_bytes} bytes", code="too_large")
    if not content or content.isspace():
        raise IngestError("file is empty", code="empty_file")
    kind = sniff(content)
    if ext == ".pdf":
        _check_pdf(content, kind)
    elif ext in OOXML_MAIN:
        _check_ooxml(ext, content, kind, limits)
    elif ext in TEXT_EXTENSIONS:
        _check_text(ext, content, kind)


def _mismatch(ext: str, kind: str) -> IngestError:
    return IngestError(f"content is {kind}, not {ext.lstrip('.')}", code="type_mismatch")


def _check_pdf(content: bytes, kind: str | None) -> None:
    if kind != "pdf":
        if kind is not None:
            raise _mismatch(".pdf", kind)
        raise IngestError("no PDF header", code="corrupt_file")
    # Every complete PDF (incremental updates included) ends with %%EOF; pypdf would otherwise
    # "repair" a truncated file and index half a document without a word.
    if b"%%EOF" not in content[-8192:]:
        raise IngestError("PDF is truncated (no %%EOF marker)", code="corrupt_file")


def _check_text(ext: str, content: bytes, kind: str | None) -> None:
    if kind is not None:
        raise _mismatch(ext, kind)
    if _looks_binary(content[:65536]):
        raise IngestError("binary content in a text file", code="corrupt_file")


def _looks_binary(sample: bytes) -> bool:
    if sample.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 text is full of NULs
        return False
    if b"\0" in sample:
        return True
    try:
        sample.decode("utf-8")
        return False
    except UnicodeDecodeError as exc:
        if exc.start >= len(sample) - 3:  # the sample cut a multi-byte character
            return False
    controls = sum(1 for b in sample if b < 32 and b not in b"\t\n\r\f\b\x1b")
    return controls > len(sample) * 0.05


def _check_ooxml(ext: str, content: bytes, kind: str | None, limits: IngestSettings) -> None:
    if kind == "ole":
        _check_ole(ext, content)
    if kind != "zip":
        if kind is not None:
            raise _mismatch(ext, kind)
        raise IngestError(f"not a {ext.lstrip('.')} file (no zip header)", code="corrupt_file")
    check_zip(content, limits)
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as exc:
        raise IngestError(f"corrupt or truncated zip: {exc}", code="corrupt_file") from exc
    with archive:
        infos = archive.infolist()
        _check_zip_sizes(infos, limits)
        names = {i.filename for i in infos}
        if "[Content_Types].xml" not in names:
            raise IngestError("zip is not an Office Open XML package", code="type_mismatch")
        if OOXML_MAIN[ext] not in names:
            other = next((e for e, main in OOXML_MAIN.items() if main in names), None)
            if other is not None:
                raise _mismatch(ext, other.lstrip("."))
            raise IngestError(f"package has no {OOXML_MAIN[ext]}", code="corrupt_file")
        types = _content_types(archive)
        for info in infos:
            if not info.is_dir() and _parsed_as_xml(archive, info, types):
                _scan_for_declarations(archive, info)


def _check_ole(ext: str, content: bytes) -> None:
    """Office writes a password-protected docx/xlsx/pptx as an OLE compound file with an
    ``EncryptedPackage`` stream; any other readable OLE file is a legacy .doc/.xls/.ppt."""
    try:
        import olefile  # installed with unstructured (python-oxmsg)

        with olefile.OleFileIO(io.BytesIO(content)) as ole:
            encrypted = ole.exists("EncryptedPackage") or ole.exists("EncryptionInfo")
    except Exception:  # unreadable or olefile missing: the common case is still encryption
        encrypted = True
    if encrypted:
        raise IngestError(f"{ext.lstrip('.')} is password-protected", code="encrypted")
    raise _mismatch(ext, "a legacy binary Office file (OLE)")


def _check_zip_sizes(infos: list[zipfile.ZipInfo], limits: IngestSettings) -> None:
    if len(infos) > limits.ooxml_max_members:
        raise IngestError(f"zip holds {len(infos)} members (limit {limits.ooxml_max_members})", code="zip_bomb")
    total = 0
    for info in infos:
        total += info.file_size
        if total > limits.ooxml_max_uncompressed_bytes:
            raise IngestError(
                f"zip inflates beyond {limits.ooxml_max_uncompressed_bytes} bytes", code="zip_bomb"
            )
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > _RATIO_FLOOR and ratio > limits.ooxml_max_compression_ratio:
            raise IngestError(f"zip member {info.filename} compresses {ratio:.0f}:1", code="zip_bomb")


def _content_types(archive: zipfile.ZipFile) -> tuple[dict[str, str], dict[str, str]]:
    """(extension → type, part name → type) from ``[Content_Types].xml``."""
    info = archive.getinfo("[Content_Types].xml")
    if info.file_size > _BLOCK:  # a few KB in any real package; ElementTree reads it whole
        raise IngestError("[Content_Types].xml is implausibly large", code="corrupt_file")
    _scan_for_declarations(archive, info)  # before ElementTree sees it
    try:
        root = ElementTree.fromstring(archive.read(info))
    except (ElementTree.ParseError, zipfile.BadZipFile, OSError) as exc:
        raise IngestError(f"corrupt [Content_Types].xml: {exc}", code="corrupt_file") from exc
    defaults, overrides = {}, {}
    for el in root:
        tag = el.tag.rsplit("}", 1)[-1]
        if tag == "Default":
            defaults[el.get("Extension", "").lower()] = el.get("ContentType", "")
        elif tag == "Override":
            overrides[el.get("PartName", "").lstrip("/")] = el.get("ContentType", "")
    return defaults, overrides


def _parsed_as_xml(archive: zipfile.ZipFile, info: zipfile.ZipInfo, types: tuple[dict[str, str], dict[str, str]]) -> bool:
    """Whether some parser may read this part as XML: it is declared XML, or it starts like XML
    (openpyxl follows relationships to any part name). Media is never parsed as XML (SVG images
    may carry a DOCTYPE), nor are binary parts such as Mac printer settings, which embed a plist
    with a DOCTYPE after a binary header."""
    defaults, overrides = types
    name = info.filename
    ctype = overrides.get(name) or defaults.get(PurePosixPath(name).suffix.lstrip(".").lower(), "")
    if ctype.startswith(("image/", "video/", "audio/")):
        return False
    if ctype.endswith(("/xml", "+xml")):
        return True
    try:
        with archive.open(info) as member:
            head = member.read(64)
    except ValueError as exc:  # a seek before the start: the member is cut short
        raise IngestError(f"truncated zip member: {exc}", code="truncated_file") from exc
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
        raise IngestError(f"corrupt zip member {name}: {exc}", code="corrupt_file") from exc
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            head = head[len(bom):].decode(encoding, errors="ignore").encode()
            break
    return head.lstrip(b" \t\r\n").startswith(b"<") or head.startswith((b"<\0", b"\0<"))


def _scan_for_declarations(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """Stream one member; a DTD (DOCTYPE/ENTITY) in an OOXML part is only ever an attack."""
    tail = b""
    try:
        with archive.open(info) as member:
            while block := member.read(_BLOCK):
                window = (tail + block).lower()
                if any(d in window for d in _DECL):
                    raise IngestError(f"{info.filename} declares a DTD or entities", code="xml_bomb")
                tail = block[-32:]
    except ValueError as exc:  # a seek before the start: the member is cut short
        raise IngestError(f"truncated zip member: {exc}", code="truncated_file") from exc
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
        # CRC mismatch, a member cut short, an unknown method, a password-protected member
        raise IngestError(f"corrupt zip member {info.filename}: {exc}", code="corrupt_file") from exc

