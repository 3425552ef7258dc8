"""Documents made at run time, one generator per format plus the hostile ones; shared by the
test suite (``tests/fixtures_docs.py`` re-exports them) and the hostile-file battery
(``battery/hostile.py``). The Office generators need the test extras (python-docx,
python-pptx, openpyxl, msoffcrypto-tool).

Every generator returns bytes; nothing binary is committed. Known sentences are constants so a
test can assert that a parser found them. PDFs are written by hand (reportlab is not a
dependency): the generator computes a correct cross-reference table, so pypdf reads them in
strict mode.
"""

from __future__ import annotations

import io
import random
import zipfile
from email.message import EmailMessage
from pathlib import Path

TITLE = "Quarterly Travel Policy"
SECTION = "Hotel Limits"
SENTENCE = "Employees may book hotels up to two hundred euros per night."
SENTENCE_2 = "Receipts must be uploaded within thirty days of the trip."
ATTACHMENT_SENTENCE = "The attached audit report confirms the ledger was reconciled."
TABLE_ROWS = [["Region", "Cap", "Currency"], ["Berlin", "210", "EUR"], ["Paris", "230", "EUR"], ["London", "250", "GBP"]]
PDF_PAGES = [
    ["Revenue grew by eleven percent in the third quarter.", "Costs were flat compared with last year."],
    ["The board approved the acquisition of Northwind Traders.", "Closing is expected in January."],
]


# -- benign formats ----------------------------------------------------------------------------


def make_txt() -> bytes:
    return f"{TITLE.upper()}\n\n{SENTENCE} {SENTENCE_2}\n".encode()


def make_md() -> bytes:
    return f"# {TITLE}\n\nIntro paragraph for the policy document.\n\n## {SECTION}\n\n{SENTENCE} {SENTENCE_2}\n".encode()


def make_html() -> bytes:
    rows = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in TABLE_ROWS)
    return (
        f"<html><head><title>{TITLE}</title></head><body><h1>{TITLE}</h1><p>Intro paragraph for the policy.</p>"
        f"<h2>{SECTION}</h2><p>{SENTENCE} {SENTENCE_2}</p><table>{rows}</table></body></html>"
    ).encode()


def make_csv() -> bytes:
    return ("\n".join(",".join(r) for r in TABLE_ROWS) + "\n").encode()


def make_docx(paragraphs: int = 0) -> bytes:
    from docx import Document

    doc = Document()
    doc.add_heading(TITLE, level=1)
    doc.add_paragraph("Intro paragraph for the policy document.")
    doc.add_heading(SECTION, level=2)
    doc.add_paragraph(f"{SENTENCE} {SENTENCE_2}")
    for i in range(paragraphs):
        doc.add_paragraph(f"Filler paragraph number {i} keeps the document longer than one chunk.")
    table = doc.add_table(rows=len(TABLE_ROWS), cols=len(TABLE_ROWS[0]))
    for r, row in enumerate(TABLE_ROWS):
        for c, cell in enumerate(row):
            table.cell(r, c).text = cell
    out = io.BytesIO()
    doc.save(out)
    return out.getvalue()


def make_pptx() -> bytes:
    from pptx import Presentation

    prs = Presentation()
    slide = prs.slides.add_slide(prs.slide_layouts[1])  # title and content
    slide.shapes.title.text = TITLE
    slide.placeholders[1].text = SENTENCE
    slide = prs.slides.add_slide(prs.slide_layouts[1])
    slide.shapes.title.text = SECTION
    slide.placeholders[1].text = SENTENCE_2
    out = io.BytesIO()
    prs.save(out)
    return out.getvalue()


def make_xlsx() -> bytes:
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.title = "Caps"
    for row in TABLE_ROWS:
        ws.append(row)
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def make_eml(attachment: tuple[str, bytes] | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Alice <alice@example.com>"
    msg["To"] = "bob@example.com"
    msg["Subject"] = TITLE
    msg["Date"] = "Thu, 01 Oct 2026 09:00:00 +0000"
    msg.set_content(f"Hello Bob,\n\n{SENTENCE} {SENTENCE_2}\n\nRegards,\nAlice\n")
    if attachment is None:
        attachment = ("audit-report.docx", make_docx_with(ATTACHMENT_SENTENCE))
    name, data = attachment
    maintype, subtype = ("text", "plain") if name.endswith(".txt") else ("application", "octet-stream")
    if maintype == "text":
        msg.add_attachment(data.decode(), subtype=subtype, filename=name)
    else:
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return bytes(msg)


def make_docx_with(sentence: str) -> bytes:
    from docx import Document

    doc = Document()
    doc.add_heading("Audit Report", level=1)
    doc.add_paragraph(sentence)
    out = io.BytesIO()
    doc.save(out)
    return out.getvalue()


def make_pdf(pages: list[list[str]] | None = None, *, page_extra: bytes = b"") -> bytes:
    """A minimal, valid PDF with a real text layer (Helvetica, one line per sentence);
    ``page_extra`` is spliced into every page dictionary."""
    pages = PDF_PAGES if pages is None else pages
    n = len(pages)
    # object numbers: 1 catalog, 2 pages, 3 font, then (page, content) pairs
    objs: dict[int, bytes] = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    }
    kids = []
    for i, lines in enumerate(pages):
        page_no, content_no = 4 + 2 * i, 5 + 2 * i
        kids.append(f"{page_no} 0 R".encode())
        ops = [b"BT /F1 12 Tf 72 720 Td 16 TL"]
        for line in lines:
            esc = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            ops.append(f"({esc}) Tj T*".encode("latin-1"))
        ops.append(b"ET")
        stream = b"\n".join(ops)
        objs[page_no] = (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
            f"/Contents {content_no} 0 R ".encode() + page_extra + b">>"
        )
        objs[content_no] = b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream"
    objs[2] = b"<< /Type /Pages /Kids [" + b" ".join(kids) + b"] /Count %d >>" % n
    return _pdf_file(objs)


def _pdf_file(objs: dict[int, bytes]) -> bytes:
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for num in sorted(objs):
        offsets[num] = out.tell()
        out.write(b"%d 0 obj\n" % num + objs[num] + b"\nendobj\n")
    xref = out.tell()
    size = max(objs) + 1
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % size)
    for num in range(1, size):
        out.write(b"%010d 00000 n \n" % offsets[num] if num in offsets else b"0000000000 65535 f \n")
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (size, xref))
    return out.getvalue()


BENIGN = {
    "policy.txt": make_txt,
    "policy.md": make_md,
    "policy.html": make_html,
    "announcement.eml": make_eml,
    "policy.docx": make_docx,
    "deck.pptx": make_pptx,
    "caps.xlsx": make_xlsx,
    "caps.csv": make_csv,
    "report.pdf": make_pdf,
}


def write_all(folder: Path) -> dict[str, Path]:
    """Every benign format written under ``folder``; name → path."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, make in BENIGN.items():
        path = folder / name
        path.write_bytes(make())
        paths[name] = path
    return paths


# -- hostile files -------------------------------------------------------------------------------


def zip_bomb(valid: bytes, *, member_bytes: int = 200 * 1024 * 1024) -> bytes:
    """``valid`` OOXML plus one member of zeros that deflates ~1000:1 (written in pieces, so
    building it never holds ``member_bytes`` in memory)."""
    out = io.BytesIO(valid)
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        block = b"\0" * (1024 * 1024)
        with z.open("customXml/item9.xml", "w", force_zip64=True) as f:
            for _ in range(member_bytes // len(block)):
                f.write(block)
    return out.getvalue()


def many_members(valid: bytes, count: int) -> bytes:
    out = io.BytesIO(valid)
    with zipfile.ZipFile(out, "a") as z:
        for i in range(count):
            z.writestr(f"customXml/x{i}.bin", b"")
    return out.getvalue()


BILLION_LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    + b"".join(
        b' <!ENTITY lol%d "%s">\n' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10) for i in range(1, 10)
    )
    + b"]>\n"
)


def billion_laughs_docx(*, utf16: bool = False) -> bytes:
    """A docx whose main part declares the classic entity expansion."""
    body = BILLION_LAUGHS + (
        b'<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
        b"<w:body><w:p><w:r><w:t>&lol9;</w:t></w:r></w:p></w:body></w:document>"
    )
    if utf16:
        body = body.replace(b'<?xml version="1.0"?>', b'<?xml version="1.0" encoding="UTF-16"?>').decode().encode("utf-16")
    return replace_member(make_docx(), "word/document.xml", body)


def replace_member(valid: bytes, name: str, data: bytes) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(valid))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for info in src.infolist():
            z.writestr(info.filename, data if info.filename == name else src.read(info.filename))
    return out.getvalue()


def truncated(valid: bytes, fraction: float = 0.5) -> bytes:
    return valid[: int(len(valid) * fraction)]


def encrypted_pdf(password: str = "s3cret", algorithm: str = "AES-128") -> bytes:
    """``algorithm``: RC4-40, RC4-128, AES-128 or AES-256 (pypdf's names)."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(make_pdf())))
    writer.encrypt(user_password=password, owner_password="owner", algorithm=algorithm)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def owner_only_pdf() -> bytes:
    """Encrypted with an empty user password: readers open it without asking, so must we."""
    return encrypted_pdf(password="")


OLE_MAGIC = bytes.fromhex("D0CF11E0A1B11AE1")


def encrypted_ooxml(valid: bytes | None = None, password: str = "pw") -> bytes:
    """What Office writes for a password-protected docx/xlsx/pptx (``valid``, default a docx): an
    OLE compound file holding ``EncryptionInfo`` and ``EncryptedPackage`` streams. Built with
    msoffcrypto when present, otherwise a bare OLE header (enough for magic-byte detection)."""
    try:
        from msoffcrypto.format.ooxml import OOXMLFile
    except ImportError:  # pragma: no cover
        return OLE_MAGIC + b"\0" * 504
    out = io.BytesIO()
    OOXMLFile(io.BytesIO(valid or make_docx())).encrypt(password, out)  # type: ignore[attr-defined]
    return out.getvalue()


def legacy_ole() -> bytes:
    """A readable OLE compound file without encryption streams (what a renamed .doc looks like)."""
    data = encrypted_ooxml()
    for name in ("EncryptedPackage", "EncryptionInfo"):
        data = data.replace(name.encode("utf-16-le"), ("X" + name[1:]).encode("utf-16-le"))
    return data


def bad_crc(valid: bytes, member: str = "word/document.xml") -> bytes:
    """``valid`` with one byte of ``member`` flipped inside a stored (uncompressed) copy."""
    src = zipfile.ZipFile(io.BytesIO(valid))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as z:
        for info in src.infolist():
            z.writestr(info.filename, src.read(info.filename))
    data = out.getvalue()
    body = src.read(member)
    at = data.index(body) + len(body) // 2
    return data[:at] + bytes([data[at] ^ 0x20]) + data[at + 1:]


def image_only_pdf() -> bytes:
    """A valid PDF with a page and no text layer (what a scan without OCR looks like)."""
    return make_pdf([[]])


PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


def deeply_nested_pdf(depth: int = 50_000) -> bytes:
    """A page whose resources hold an array nested ``depth`` levels: recursive parsers overflow."""
    return make_pdf([["Nested structure page."]], page_extra=b"/Junk " + b"[" * depth + b"]" * depth)


def deep_page_tree_pdf(depth: int = 5_000) -> bytes:
    """A page tree nested ``depth`` Pages nodes deep with one leaf page."""
    objs: dict[int, bytes] = {1: b"<< /Type /Catalog /Pages 2 0 R >>"}
    for i in range(depth):
        num, kid = 2 + i, 3 + i
        parent = b" /Parent %d 0 R" % (num - 1) if i else b""
        objs[num] = b"<< /Type /Pages /Kids [%d 0 R] /Count 1%s >>" % (kid, parent)
    leaf = depth + 2
    objs[leaf] = b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] >>" % (leaf - 1)
    return _pdf_file(objs)


def stream_bomb_pdf(decompressed_bytes: int = 1024 * 1024 * 1024) -> bytes:
    """One page whose content stream inflates to ``decompressed_bytes`` of text-showing operators."""
    import zlib

    comp = zlib.compressobj(9)
    chunk = b"BT /F1 12 Tf 72 720 Td " + b"(bomb ) Tj " * (4 * 1024 * 1024 // 11) + b"ET\n"
    parts = [comp.compress(chunk) for _ in range(decompressed_bytes // len(chunk))]
    data = b"".join(parts) + comp.flush()
    objs = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        3: b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
        5: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        4: b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(data) + data + b"\nendstream",
    }
    return _pdf_file(objs)


def plain_zip() -> bytes:
    """A valid zip that is not an Office package."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("readme.txt", "not an office file")
    return out.getvalue()


def zip_total_bomb(valid: bytes, members: int = 257, member_bytes: int = 1024 * 1024) -> bytes:
    """``valid`` OOXML plus ``members`` members of zeros, each small enough to escape the
    per-member ratio check, together over the inflated-size cap."""
    out = io.BytesIO(valid)
    block = b"\0" * member_bytes
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for i in range(members):
            z.writestr(f"customXml/blob{i}.bin", block)
    return out.getvalue()


OOXML_MAIN = {"docx": "word/document.xml", "xlsx": "xl/workbook.xml", "pptx": "ppt/presentation.xml"}


def xml_bomb(valid: bytes, ext: str, dtd: bytes = BILLION_LAUGHS, part: str | None = None) -> bytes:
    """``valid`` OOXML whose ``part`` (default: the main part of ``ext``) opens with ``dtd``; a
    part that does not exist yet is added (an extra XML part a parser may follow)."""
    part = part or OOXML_MAIN[ext]
    src = zipfile.ZipFile(io.BytesIO(valid))
    names = set(src.namelist())
    if part in names:
        body = src.read(part)
        if body.startswith(b"<?xml"):
            body = body[body.index(b"?>") + 2:]
        return replace_member(valid, part, dtd + body)
    out = io.BytesIO(valid)
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(part, dtd + b"<root>&lol9;</root>")
    return out.getvalue()


XXE = b'<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY xxe SYSTEM "http://127.0.0.1:9/evil.dtd">]>\n'
PARAMETER_ENTITY = b'<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY % pe SYSTEM "http://127.0.0.1:9/p.dtd"> %pe;]>\n'


def quadratic_blowup(size: int = 50_000) -> bytes:
    """One big entity (no nesting), meant to be referenced many times."""
    return b'<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY a "' + b"a" * size + b'">]>\n'


_DRAW_IMAGE = b"q 612 0 0 792 0 0 cm /Im1 Do Q"


def big_image_pdf(size: int = 20 * 1024 * 1024, seed: int = 7) -> bytes:
    """A valid one-page PDF whose only content is an image of ``size`` random bytes: big, no text."""
    width = 4096
    height = max(size // width, 1)
    data = random.Random(seed).randbytes(width * height)
    objs = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        3: b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /XObject << /Im1 5 0 R >> >> "
           b"/Contents 4 0 R >>",
        4: b"<< /Length %d >>\nstream\n%s\nendstream" % (len(_DRAW_IMAGE), _DRAW_IMAGE),
        5: b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray /BitsPerComponent 8 "
           b"/Length %d >>\nstream\n" % (width, height, len(data)) + data + b"\nendstream",
    }
    return _pdf_file(objs)


def oversized_pdf(size: int) -> bytes:
    """A PDF header, ``size`` bytes of comment padding and an end marker (only its size matters)."""
    pad = max(size - 32, 0)
    return b"%PDF-1.4\n%" + b"x" * pad + b"\n%%EOF\n"


def garbage(size: int = 64 * 1024, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


def huge_line_txt(size: int = 20 * 1024 * 1024) -> bytes:
    """One line of ``size`` bytes: words, no newline, sentence ends every ~100 words."""
    words = (b"alpha beta gamma delta epsilon zeta eta theta iota kappa " * 10)[:-1] + b". "
    return (words * (size // len(words) + 1))[:size]


# -- zip structure attacks (OOXML containers) ----------------------------------------------------
# Each returns a docx/xlsx/pptx that zipfile (and so every OOXML parser) opens, with one structural
# lie that ``ingest.zipcheck`` must refuse. Headers are patched in place, so the rest stays valid.

_FIXED_TIME = (2026, 1, 1, 0, 0, 0)


def _central_records(data: bytes) -> list[tuple[int, bytes, int]]:
    """(offset of the central record, entry name, local header offset) for every entry."""
    import struct

    eocd = data.rfind(b"PK\x05\x06")
    _, _, _, _, count, _, cd_offset, _ = struct.unpack_from("<4s4H2LH", data, eocd)
    out, at = [], cd_offset
    for _ in range(count):
        fields = struct.unpack_from("<4s6H3L5H2L", data, at)
        name_len, extra_len, comment_len, offset = fields[10], fields[11], fields[12], fields[16]
        out.append((at, data[at + 46:at + 46 + name_len], offset))
        at += 46 + name_len + extra_len + comment_len
    return out


def zip_with_entry(valid: bytes, name: str, data: bytes = b"<x/>", *, mode: int | None = None) -> bytes:
    """``valid`` plus one entry called ``name`` (any characters; a NUL is patched in afterwards,
    since zipfile cuts names at NUL) whose unix mode is ``mode`` when given."""
    placeholder = name.replace("\0", "_")
    out = io.BytesIO(valid)
    with zipfile.ZipFile(out, "a") as z:
        info = zipfile.ZipInfo(placeholder, _FIXED_TIME)
        info.create_system = 3
        if mode is not None:
            info.external_attr = mode << 16
        z.writestr(info, data)
    raw = out.getvalue()
    if placeholder != name:
        old, new = placeholder.encode(), name.encode()
        raw = raw.replace(old, new)
    return raw


def zip_symlink(valid: bytes, target: str = "/dev/zero", name: str = "word/media/image9.png") -> bytes:
    """A symlink entry (mode 120777): to a device, to itself (a loop) or to a directory."""
    import stat

    return zip_with_entry(valid, name, target.encode(), mode=stat.S_IFLNK | 0o777)


def zip_local_name_mismatch(valid: bytes) -> bytes:
    """The last entry's local header names another file than its central record."""
    raw = bytearray(zip_with_entry(valid, "customXml/item7.xml"))
    _, name, offset = _central_records(bytes(raw))[-1]
    raw[offset + 30:offset + 30 + len(name)] = name.replace(b"item7", b"itemX")
    return bytes(raw)


def zip_local_crc_mismatch(valid: bytes) -> bytes:
    """The last entry's local header carries another CRC than its central record."""
    raw = bytearray(zip_with_entry(valid, "customXml/item7.xml"))
    _, _, offset = _central_records(bytes(raw))[-1]
    raw[offset + 14] ^= 0xFF
    return bytes(raw)


def zip_count_lie(valid: bytes, delta: int = 1) -> bytes:
    """The end record declares ``delta`` more entries than the central directory holds."""
    import struct

    raw = bytearray(valid)
    eocd = raw.rfind(b"PK\x05\x06")
    here, total = struct.unpack_from("<2H", raw, eocd + 8)
    struct.pack_into("<2H", raw, eocd + 8, here + delta, total + delta)
    return bytes(raw)


def zip64_huge_count(valid: bytes, count: int = 1 << 40) -> bytes:
    """The end records rewritten as zip64, claiming ``count`` entries in the same directory."""
    import struct

    eocd = valid.rfind(b"PK\x05\x06")
    _, _, _, _, _, cd_size, cd_offset, _ = struct.unpack_from("<4s4H2LH", valid, eocd)
    body = valid[:eocd]
    record = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, cd_size, cd_offset)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, len(body), 1)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return body + record + locator + end


def zip_size_lie(valid: bytes, size: int = 0x7FFFFFFF) -> bytes:
    """The first central record says its entry holds ``size`` compressed bytes: past the file."""
    import struct

    raw = bytearray(valid)
    at, _, _ = _central_records(valid)[0]
    struct.pack_into("<L", raw, at + 20, size)
    return bytes(raw)


def zip_overlapping(valid: bytes) -> bytes:
    """A stored entry whose data is a complete second entry, which the central directory also
    lists: the two share bytes (how overlapping-entry zip bombs multiply their output)."""
    import struct

    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w", zipfile.ZIP_STORED) as z:
        z.writestr(zipfile.ZipInfo("customXml/inner.xml", _FIXED_TIME), b"<inner/>")
    inner_bytes = inner.getvalue()
    _, _, _ = _central_records(inner_bytes)[0]
    local = inner_bytes[:inner_bytes.index(b"PK\x01\x02")]
    out = io.BytesIO(valid)
    with zipfile.ZipFile(out, "a", zipfile.ZIP_STORED) as z:
        z.writestr(zipfile.ZipInfo("customXml/outer.bin", _FIXED_TIME), local)
        z.writestr(zipfile.ZipInfo("customXml/inner.xml", _FIXED_TIME), b"<inner/>")
    raw = bytearray(out.getvalue())
    records = _central_records(bytes(raw))
    outer_offset = records[-2][2]
    outer_data = outer_offset + 30 + len(b"customXml/outer.bin")
    struct.pack_into("<L", raw, records[-1][0] + 42, outer_data)
    return bytes(raw)


def zip_trailing(valid: bytes, extra: bytes = b"appended after the end record") -> bytes:
    return valid + extra


def zip_concatenated(first: bytes, second: bytes) -> bytes:
    """Two archives back to back: readers that scan from the front see ``first``, those that read
    the end record see ``second``."""
    return first + second


def zip_streamed(valid: bytes) -> bytes:
    """``valid`` rewritten by a streaming writer (data descriptors, no sizes in local headers):
    legitimate, and must pass."""

    class _Unseekable(io.RawIOBase):
        def __init__(self) -> None:
            self.buf = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, b: bytes) -> int:  # type: ignore[override]
            self.buf += b
            return len(b)

    src = zipfile.ZipFile(io.BytesIO(valid))
    sink = _Unseekable()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED) as z:  # type: ignore[arg-type]
        for info in src.infolist():
            with z.open(zipfile.ZipInfo(info.filename, info.date_time), "w") as f:
                f.write(src.read(info))
    return bytes(sink.buf)


def truncated_member(valid: bytes, member: str = "word/document.xml") -> bytes:
    """``valid`` whose ``member`` holds a deflate stream cut in half, with headers that agree with
    each other (sizes, CRC of the whole): the structure passes, the stream ends early."""
    import struct
    import zlib

    src = zipfile.ZipFile(io.BytesIO(valid))
    body = src.read(member)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    cut = (comp.compress(body) + comp.flush())
    cut = cut[:len(cut) // 2]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for info in src.infolist():
            if info.filename == member:
                z.writestr(zipfile.ZipInfo(member, _FIXED_TIME), cut, compress_type=zipfile.ZIP_STORED)
            else:
                z.writestr(info.filename, src.read(info))
    raw = bytearray(out.getvalue())
    crc = zlib.crc32(body)
    for at, name, offset in _central_records(bytes(raw)):
        if name == member.encode():
            struct.pack_into("<H", raw, offset + 8, 8)  # method: deflate
            struct.pack_into("<L", raw, offset + 14, crc)
            struct.pack_into("<L", raw, offset + 22, len(body))
            struct.pack_into("<H", raw, at + 10, 8)
            struct.pack_into("<L", raw, at + 16, crc)
            struct.pack_into("<L", raw, at + 24, len(body))
    return bytes(raw)


# -- amplifying and undecodable e-mail -----------------------------------------------------------


def _mail(headers: str, body: str) -> bytes:
    return (f"From: Alice <alice@example.com>\nTo: bob@example.com\nDate: Thu, 01 Oct 2026 09:00:00 +0000\n"
            f"{headers}\n\n{body}").encode()


def email_lines(lines: int = 2000, line: str = "line") -> bytes:
    """A body of ``lines`` short lines: unstructured made each a title, and each title a chunk."""
    return _mail("Subject: Lines\nContent-Type: text/plain; charset=utf-8", f"{line}\n" * lines)


def email_html_lines(lines: int = 2000) -> bytes:
    return _mail("Subject: Lines\nContent-Type: text/html; charset=utf-8",
                 "<html><body>" + "<p>line</p>" * lines + "</body></html>")


def email_unclosed_multipart(size: int = 1024 * 1024) -> bytes:
    """A multipart whose closing boundary never comes: the rest of the file is one part of
    short lines."""
    head = 'Subject: Unclosed\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="B0UND"'
    return _mail(head, "--B0UND\nContent-Type: text/plain\n\n" + "short line\n" * (size // 11))


def email_many_parts(parts: int = 20_000, *, named: bool = False) -> bytes:
    """A multipart with ``parts`` siblings: unnamed text parts, or named attachments of a type
    we do not parse."""
    head = 'Subject: Parts\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="B0UND"'
    if named:
        part = ("--B0UND\nContent-Type: application/octet-stream\nContent-Disposition: attachment; "
                'filename="export-{i}.bin"\n\nAA==\n')
    else:
        part = "--B0UND\nContent-Type: text/plain\n\npart {i}\n"
    return _mail(head, "--B0UND\nContent-Type: text/plain\n\nThe body.\n" + "".join(part.format(i=i) for i in range(parts))
                 + "--B0UND--\n")


def email_unknown_charset(*, html: bool = False) -> bytes:
    kind = "html" if html else "plain"
    body = "<p>The budget was approved.</p>" if html else "The budget was approved.\n"
    return _mail(f"Subject: Charset\nContent-Type: text/{kind}; charset=x-no-such-charset", body)
