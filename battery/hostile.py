"""Hostile-file battery: hundreds of hostile, broken and valid files through one real ingest job.

``python -m battery.hostile [--files 500] [--seed N] [--in-process]``

Generates the files into a temporary source tree from a seeded generator (zip bombs by ratio, by
total size and by member count, and XML bombs — billion laughs, quadratic blow-up, external and
parameter entities — inside docx/xlsx/pptx; zip structure attacks: climbing, absolute, drive,
backslash, over-long, control and RTL-override entry names, symlink entries, local headers that
contradict the central directory, lying entry counts and zip64 records, overlapping entries,
trailing data and concatenated archives; deeply nested PDFs and PDF page trees, PDF stream
bombs, huge PDFs; truncated files of every format and truncated members; encrypted PDF (RC4/AES)
and Office files; wrong extensions; binary garbage; empty files; huge single lines; amplifying
e-mail: thousands of short body lines, an unclosed multipart, tens of thousands of sibling parts;
e-mail in an unknown charset; unsupported types; valid files of every format mixed in), then runs
one sync job over it through the production pipeline (the sandboxed parser, the catalog, Qdrant
Edge; hash embedder): as a new user runs it, ``clearance ingest`` in a process of its own, its
whole process tree (the CLI, the parser template, its workers) polled for RSS every 50 ms (the
summed RSS at one instant, forked workers' shared pages counted in each: an upper bound; goal
1.5 GB, ``TREE_RSS_GOAL``), or with ``--in-process`` (and in the fast test) ``Ingestor.sync`` in
this process. It checks:

- the job completed and every file has exactly one outcome in it;
- every bad file failed with a stable error code (a key of ``ingest.parse.ERROR_CODES``), and
  the one its kind calls for; truncated text formats may also parse (what is left is text);
- every valid file was ingested and is found by a BM25 search for its title, and the catalog
  and the index agree exactly afterwards;
- no file cost more (its job item's time) than ``parse_timeout_s`` plus embedding
  ``max_chunks_per_document`` chunks with the configured embedder (measured here);
- peak RSS of the parser processes (the template and every worker it forked) stayed within
  1 GiB: ``VmHWM`` of each, polled every 20 ms while the job runs, and, in this command,
  ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` once the parser pool has been stopped and reaped (an
  upper bound over every child and reaped descendant);
- an amplifying file that is ingested has at most the chunks its kind allows (the 2,000-line
  e-mail at most 10);
- no network connection was attempted: the workers' own guard (socket connect and name
  resolution refused and counted, reported with every parse and logged as
  ``parse.network_blocked``) counted nothing, and no parser process ever held an inet socket;
  the isolation in force (network namespace or seccomp) is reported;
- through the push API of a live server: the 2,000-line e-mail PUT gives at most 10 chunks, and a
  PUT declaring a body over ``api.max_body_bytes`` is refused with 413 ``body_too_large`` before
  its body is sent.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import logging
import random
import re
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from battery import hostile_files as H
from battery.result import report

SOURCE = "hostile"
RSS_LIMIT = 1024 * 1024 * 1024
TREE_RSS_GOAL = 1_500_000_000  # the CLI sync's whole process tree (parent, template, workers): 1.5 GB
OK = "ok"  # the expected outcome of a file that must be ingested
OFFICE = ("docx", "xlsx", "pptx")
TEXTS = ("txt", "md", "html", "csv", "eml")
EXTENSIONS = (*TEXTS, *OFFICE, "pdf")
# A kind's generator: (name, bytes, expected outcomes) or, for amplifying files, with the most
# chunks the file may be ingested as.
Make = Callable[[random.Random, int, bool], "tuple[str, bytes, frozenset[str]] | tuple[str, bytes, frozenset[str], int]"]


def _codes(*codes: str) -> frozenset[str]:
    return frozenset(codes)


def _valid(ext: str, rng: random.Random, i: int) -> bytes:
    line = f"Valid document {i}: the {rng.choice(['audit', 'budget', 'travel', 'hiring'])} policy was approved."
    if ext == "txt":
        return f"Policy {i}\n\n{line} {H.SENTENCE}\n".encode()
    if ext == "md":
        return f"# Policy {i}\n\n{line}\n\n## Details\n\n{H.SENTENCE}\n".encode()
    if ext == "html":
        return f"<html><body><h1>Policy {i}</h1><p>{line}</p><p>{H.SENTENCE}</p></body></html>".encode()
    if ext == "csv":
        return ("id,item,amount\n" + "".join(f"{i}-{r},{rng.choice(H.TABLE_ROWS)[0]},{r * 10}\n" for r in range(5))).encode()
    if ext == "eml":
        return H.make_eml(attachment=(f"note-{i}.txt", f"{line}\n".encode()))
    if ext == "docx":
        return H.make_docx_with(line)
    if ext == "pptx":
        return H.make_pptx()
    if ext == "xlsx":
        return H.make_xlsx()
    return H.make_pdf([[line, H.SENTENCE]])


def _office(ext: str) -> bytes:
    return {"docx": H.make_docx, "xlsx": H.make_xlsx, "pptx": H.make_pptx}[ext]()


# -- the kinds of file: (name, bytes, expected outcomes) for variant i ---------------------------


def zip_bomb_ratio(rng: random.Random, i: int, small: bool) -> tuple[str, bytes, frozenset[str]]:
    ext = OFFICE[i % 3]
    mib = rng.choice((2, 4) if small else (2, 4, 8, 16, 32))
    return f"ratio-{mib}mib.{ext}", H.zip_bomb(_office(ext), member_bytes=mib << 20), _codes("zip_bomb")


def zip_bomb_total(rng: random.Random, i: int, small: bool) -> tuple[str, bytes, frozenset[str]]:
    ext = OFFICE[i % 3]
    return f"total.{ext}", H.zip_total_bomb(_office(ext)), _codes("zip_bomb")


def zip_bomb_members(rng: random.Random, i: int, small: bool) -> tuple[str, bytes, frozenset[str]]:
    ext = OFFICE[i % 3]
    return f"members.{ext}", H.many_members(_office(ext), 10_001), _codes("zip_bomb")


_XML_DTDS = (("laughs", H.BILLION_LAUGHS, None), ("quadratic", H.quadratic_blowup(), None),
             ("xxe", H.XXE, None), ("parameter-entity", H.PARAMETER_ENTITY, None),
             ("content-types", H.BILLION_LAUGHS, "[Content_Types].xml"),
             ("extra-part", H.BILLION_LAUGHS, "customXml/item1.xml"))


def xml_bomb(rng: random.Random, i: int, small: bool) -> tuple[str, bytes, frozenset[str]]:
    ext = OFFICE[i % 3]
    if i % 7 == 6:
        return "laughs-utf16.docx", H.billion_laughs_docx(utf16=True), _codes("xml_bomb")
    name, dtd, part = _XML_DTDS[(i // 3) % len(_XML_DTDS)]
    return f"{name}.{ext}", H.xml_bomb(_office(ext), ext, dtd, part), _codes("xml_bomb")


def pdf_nested(rng: random.Random, i: int, small: bool) -> tuple[str, bytes, frozenset[str]]:
    if i % 2:
        depth = rng.randint(5_000, 10_000)
        return f"page-tree-{depth}.pdf", H.deep_page_tree_pdf(depth), _codes("corrupt_file")
    depth = rng.randint(50_000, 150_000)
    return f"nested-{depth}.pdf", H.deeply_nested_pdf(depth), _codes("corrupt_file")


def pdf_stream_bomb(rng: random.Random, i: int, small: bool) -> tuple[str, bytes, frozenset[str]]:
    mib = 100 if small else rng.choice((100, 128, 160))
    return f"stream-bomb-{mib}mib.pdf", H.stream_bomb_pdf(mib << 20), _codes("zip_bomb")


def pdf_huge(rng: random.Random, i: int, small: bool) -> tuple[str, bytes, frozenset[str]]:
    variant = i % 3
    if variant == 0:  # over max_file_bytes (50 MiB)
        return "oversized.pdf", H.oversized_pdf(51 << 20), _codes("too_large")
    if variant == 1:  # tens of MB of image, no text layer
        mib = 4 if small else rng.choice((16, 24, 32))
        return f"image-{mib}mib.pdf", H.big_image_pdf(mib << 20, seed=i), _codes("no_text")
    pages = 20 if small else rng.choice((100, 150, 200))  # many pages of real text: valid
    body = [[f"Page {p} of the annual report, line {n}: revenue and costs by region." for n in range(8)]
            for p in range(pages)]
    return f"long-{pages}-pages.pdf", H.make_pdf(body), _codes(OK)


def truncated(rng: random.Random, i: int, small: bool) -> tuple[str, bytes, frozenset[str]]:
    ext = EXTENSIONS[i % len(EXTENSIONS)]
    fraction = rng.uniform(0.05, 0.9)
    data = H.truncated(_valid(ext, rng, i) if ext in TEXTS else _office(ext) if ext in OFFICE else H.make_pdf(),
                       fraction)
    # What is left of a text file is text: parsing it is as right as refusing it.
    expected = frozenset({OK, "empty_file", "no_text", "corrupt_file"}) if ext in TEXTS else _codes("corrupt_file")
    return f"cut-{int(fraction * 100)}.{ext}", data, expected


def bad_crc(rng: random.Random, i: int, small: bool) -> tuple[str, bytes, frozenset[str]]:
    ext = OFFICE[i % 3]
    return f"bad-crc.{ext}", H.bad_crc(_office(ext), H.OOXML_MAIN[ext]), _codes("corrupt_file")


_PDF_CIPHERS = ("RC4-40", "RC4-128", "AES-128", "AES-256")


def encrypted(rng: random.Random, i: int, small: bool) -> tuple[str, bytes, frozenset[str]]:
    variant = i % 5
    if variant < 2:
        cipher = _PDF_CIPHERS[(i // 5) % len(_PDF_CIPHERS)]
        return f"locked-{cipher.lower()}.pdf", H.encrypted_pdf(f"pw{i}", cipher), _codes("encrypted")
    if variant == 4 and i % 2:
        return "ole-header.xlsx", H.OLE_MAGIC + b"\0" * 504, _codes("encrypted")
    ext = OFFICE[(i // 5 + variant) % 3]
    return f"locked.{ext}", H.encrypted_ooxml(_office(ext), f"pw{i}"), _codes("encrypted")


_MISNAMED: tuple[tuple[str, Callable[[], bytes]], ...] = (
    ("docx", H.make_pdf), ("xlsx", H.make_pdf), ("pptx", H.make_pdf), ("pdf", H.make_docx), ("docx", H.make_xlsx),
    ("xlsx", H.make_pptx), ("pptx", H.make_docx), ("txt", H.make_pdf), ("md", H.make_pdf), ("csv", H.make_pdf),
    ("eml", H.make_pdf), ("html", lambda: H.PNG), ("txt", H.make_docx), ("pptx", H.plain_zip),
    ("docx", H.legacy_ole), ("html", lambda: gzip.compress(b"<html>compressed</html>")),
    ("md", lambda: b"\xff\xd8\xff\xe0" + bytes(256)), ("csv", lambda: b"\x7fELF" + bytes(256)),
    ("pdf", lambda: H.PNG),
)


def wrong_extension(rng: random.Random, i: int, small: bool) -> tuple[str, bytes, frozenset[str]]:
    ext, make = _MISNAMED[i % len(_MISNAMED)]
    return f"misnamed-{i % len(_MISNAMED)}.{ext}", make(), _codes("type_mismatch")


def garbage(rng: random.Random, i: int, small: bool) -> tuple[str, bytes, frozenset[str]]:
    ext = EXTENSIONS[i % len(EXTENSIONS)]
    size = rng.randint(4, 256) * 1024
    return f"garbage-{size // 1024}k.{ext}", H.garbage(size, seed=rng.randrange(1 << 30)), _codes("corrupt_file")


def empty(rng: random.Random, i: int, small: bool) -> tuple[str, bytes, frozenset[str]]:
    ext = EXTENSIONS[i % len(EXTENSIONS)]
    return (f"zero.{ext}", b"", _codes("empty_file")) if i % 2 == 0 else \
        (f"blank.{ext}", b" \n\t\r\n " * rng.randint(1, 100), _codes("empty_file"))


def huge_line(rng: random.Random, i: int, small: bool) -> tuple[str, bytes, frozenset[str]]:
    if i % 2 == 0:  # plain text: any line length is fine
        mib = 2 if small else rng.choice((4, 8, 16))
        # 16 MiB of text is more than ingest.max_chunks_per_document (20,000) chunks: refused
        return f"line-{mib}mib.txt", H.huge_line_txt(mib << 20), _codes("too_many_chunks" if mib >= 16 else OK)
    if (i // 2) % 2:  # libxml2 would silently drop a text node this long: refused
        return "line-11mib.html", b"<p>" + H.huge_line_txt(11 << 20) + b"</p>", _codes("too_large")
    return "line-11mib.md", b"# T\n\n" + H.huge_line_txt(11 << 20), _codes("too_large")


def unsupported(rng: random.Random, i: int, small: bool) -> tuple[str, bytes, frozenset[str]]:
    name = ("program.exe", "blob.bin", "legacy.doc", "archive.zip", "data.json", "letter.rtf", "noextension")[i % 7]
    return name, b"MZ\x90\x00" + bytes(64), _codes("unsupported_type")


def no_text(rng: random.Random, i: int, small: bool) -> tuple[str, bytes, frozenset[str]]:
    if i % 2:
        from docx import Document

        out = io.BytesIO()
        Document().save(out)
        return "blank.docx", out.getvalue(), _codes("no_text")
    return "scan.pdf", H.image_only_pdf(), _codes("no_text")


def too_large(rng: random.Random, i: int, small: bool) -> tuple[str, bytes, frozenset[str]]:
    ext = ("txt", "docx", "csv")[i % 3]
    return f"oversized.{ext}", b"a " * (26 << 20), _codes("too_large")


def valid(rng: random.Random, i: int, small: bool) -> tuple[str, bytes, frozenset[str]]:
    ext = EXTENSIONS[i % len(EXTENSIONS)]
    if i % 13 == 11:
        return "owner-password-only.pdf", H.owner_only_pdf(), _codes(OK)
    if i % 13 == 12:  # a hostile attachment must not cost the message its body
        evil = (H.billion_laughs_docx() if i % 2 else H.encrypted_pdf())
        return "evil-attachment.eml", H.make_eml(attachment=("evil.docx" if i % 2 else "evil.pdf", evil)), _codes(OK)
    return f"valid-{i}.{ext}", _valid(ext, rng, i), _codes(OK)


_ZIP_STRUCTURE: tuple[tuple[str, Callable[[bytes], bytes], str], ...] = (
    ("dotdot", lambda v: H.zip_with_entry(v, "word/../../evil.xml"), "zip_unsafe_name"),
    ("absolute", lambda v: H.zip_with_entry(v, "/etc/cron.d/evil"), "zip_unsafe_name"),
    ("drive", lambda v: H.zip_with_entry(v, "C:/Windows/evil.xml"), "zip_unsafe_name"),
    ("backslash", lambda v: H.zip_with_entry(v, "word\\..\\..\\evil.xml"), "zip_unsafe_name"),
    ("long-name", lambda v: H.zip_with_entry(v, "word/" + "a" * 65_000), "zip_unsafe_name"),
    ("rtl-override", lambda v: H.zip_with_entry(v, "word/media/evil\u202egnp.xml"), "zip_unsafe_name"),
    ("control-char", lambda v: H.zip_with_entry(v, "word/ev\x1bil.xml"), "zip_unsafe_name"),
    ("symlink-device", lambda v: H.zip_symlink(v, "/dev/zero"), "zip_symlink"),
    ("symlink-loop", lambda v: H.zip_symlink(v, "word/media/image9.png"), "zip_symlink"),
    ("symlink-dir", lambda v: H.zip_symlink(v, "../../../", "word/media/"), "zip_symlink"),
    ("local-name", H.zip_local_name_mismatch, "zip_header_mismatch"),
    ("local-crc", H.zip_local_crc_mismatch, "zip_header_mismatch"),
    ("count-lie", H.zip_count_lie, "zip_implausible"),
    ("zip64-2e40", H.zip64_huge_count, "zip_implausible"),
    ("overlap", H.zip_overlapping, "zip_implausible"),
    ("trailing", H.zip_trailing, "zip_trailing_data"),
    ("concatenated", lambda v: H.zip_concatenated(v, H.make_docx()), "zip_trailing_data"),
)


def zip_structure(rng: random.Random, i: int, small: bool) -> tuple[str, bytes, frozenset[str]]:
    name, make, code = _ZIP_STRUCTURE[i % len(_ZIP_STRUCTURE)]
    ext = OFFICE[(i // len(_ZIP_STRUCTURE)) % 3]
    return f"{name}.{ext}", make(_office(ext)), _codes(code)


def amplifying_email(rng: random.Random, i: int, small: bool) -> tuple[str, bytes, frozenset[str], int]:
    """E-mail whose structure asks for far more chunks than its bytes justify. Each is ingested,
    with at most about one chunk per KB (unstructured's partitioner made one per short line)."""
    variant = i % 5
    if variant == 0:
        return "lines-2000.eml", H.email_lines(2000), _codes(OK), 10
    if variant == 1:
        data = H.email_html_lines(2000)
        return "html-lines-2000.eml", data, _codes(OK), 12
    if variant == 2:
        kib = 256 if small else rng.choice((512, 1024))
        data = H.email_unclosed_multipart(kib * 1024)
    else:
        parts = 2_000 if small else rng.choice((10_000, 20_000))
        data = H.email_many_parts(parts, named=variant == 4)
    return f"amplify-{variant}.eml", data, _codes(OK), len(data) // 1000 + 10


def undecodable(rng: random.Random, i: int, small: bool) -> tuple[str, bytes, frozenset[str]]:
    variant = i % 3
    if variant < 2:
        return f"charset-{variant}.eml", H.email_unknown_charset(html=variant == 1), _codes("unknown_charset")
    ext = OFFICE[(i // 3) % 3]
    main = H.OOXML_MAIN[ext]
    return f"cut-member.{ext}", H.truncated_member(_office(ext), main), _codes("corrupt_file", "truncated_file")


# kind -> (generator, files per 300)
KINDS: dict[str, tuple[Make, int]] = {
    "zip_bomb_ratio": (zip_bomb_ratio, 24), "zip_bomb_total": (zip_bomb_total, 3),
    "zip_bomb_members": (zip_bomb_members, 3), "xml_bomb": (xml_bomb, 30), "pdf_nested": (pdf_nested, 12),
    "pdf_stream_bomb": (pdf_stream_bomb, 6), "pdf_huge": (pdf_huge, 6), "truncated": (truncated, 36),
    "bad_crc": (bad_crc, 9), "encrypted": (encrypted, 15), "wrong_extension": (wrong_extension, 30),
    "garbage": (garbage, 30), "empty": (empty, 15), "huge_line": (huge_line, 6), "unsupported": (unsupported, 6),
    "no_text": (no_text, 3), "too_large": (too_large, 3), "valid": (valid, 63),
    "zip_structure": (zip_structure, 24), "amplifying_email": (amplifying_email, 10), "undecodable": (undecodable, 6),
}


def plan(files: int) -> dict[str, int]:
    """Files per kind for a total of ``files``: in proportion, at least one of each kind."""
    weights = sum(w for _, w in KINDS.values())
    counts = {k: max(1, round(w * files / weights)) for k, (_, w) in KINDS.items()}
    order = sorted(KINDS, key=lambda k: -KINDS[k][1])
    j = 0
    while sum(counts.values()) != files and j < 10 * len(order):
        k = order[j % len(order)]
        if sum(counts.values()) < files:
            counts[k] += 1
        elif counts[k] > 1:
            counts[k] -= 1
        j += 1
    return counts


def generate(root: Path, files: int, seed: int, small: bool) -> dict[str, tuple[str, frozenset[str], int | None]]:
    """Writes the tree (the same bytes for the same seed); doc id -> (kind, expected outcomes, the
    most chunks it may be ingested as or None)."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "acl.toml").write_text('[folders."."]\nallow = ["tenant:acme"]\n')
    expected: dict[str, tuple[str, frozenset[str], int | None]] = {}
    for kind, n in plan(files).items():
        make = KINDS[kind][0]
        for i in range(n):
            made = make(rng, i, small)
            name, data, outcome = made[0], made[1], made[2]
            rel = f"{kind}/{i:03d}-{name}"
            (root / kind).mkdir(exist_ok=True)
            (root / rel).write_bytes(data)
            expected[rel] = (kind, outcome, made[3] if len(made) > 3 else None)  # type: ignore[misc]
    return expected


# -- watching the parser processes ---------------------------------------------------------------


class ParserMonitor:
    """Polls the sandbox's template and every process under it: peak RSS (``VmHWM``, which the
    kernel keeps as a high-water mark, so a 20 ms poll misses nothing but the last moments of a
    process) and any inet socket."""

    def __init__(self, pool: Any, interval_s: float = 0.02) -> None:
        self.pool = pool
        self.interval_s = interval_s
        self.peak: dict[int, int] = {}
        self.connections: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="parser-monitor", daemon=True)

    def __enter__(self) -> ParserMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psutil

        tick = 0
        while not self._stop.is_set():
            tick += 1
            tpl = self.pool.template_pid
            if tpl is not None:
                try:
                    procs = [psutil.Process(tpl), *psutil.Process(tpl).children(recursive=True)]
                except psutil.Error:
                    procs = []
                for p in procs:
                    self._sample(p, tick % 5 == 0)
            self._stop.wait(self.interval_s)

    def _sample(self, p: Any, sockets: bool) -> None:
        import psutil

        try:
            with open(f"/proc/{p.pid}/status") as f:
                hwm = re.search(r"VmHWM:\s+(\d+) kB", f.read())
            if hwm:
                self.peak[p.pid] = max(self.peak.get(p.pid, 0), int(hwm.group(1)) * 1024)
            if sockets:
                for c in p.net_connections(kind="inet"):
                    self.connections.append(f"pid {p.pid}: {c.laddr} -> {c.raddr} {c.status}")
        except (OSError, psutil.Error):
            pass  # it ended between the listing and the read


class _NetworkLog(logging.Handler):
    """Counts the refusals the workers' network guard reports (``parse.network_blocked``)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.attempts = 0
        self.files: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("parse.network_blocked"):
            self.attempts += int(record.args[1]) if isinstance(record.args, tuple) else 1
            self.files.append(str(record.args[0]) if isinstance(record.args, tuple) else "?")


class TreeMonitor:
    """Polls a process and every descendant (the CLI, the parser template, its workers): the peak
    of their summed RSS at one instant (shared pages of forked workers counted in each, so an
    upper bound), each one's ``VmHWM``, and any inet socket any of them holds."""

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.tree_peak = 0
        self.peak: dict[int, int] = {}
        self.connections: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-monitor", daemon=True)

    def __enter__(self) -> TreeMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psutil

        tick = 0
        while not self._stop.is_set():
            tick += 1
            try:
                root = psutil.Process(self.pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                procs = []
            total = 0
            for p in procs:
                try:
                    with open(f"/proc/{p.pid}/status") as f:
                        status = f.read()
                    rss = re.search(r"VmRSS:\s+(\d+) kB", status)
                    hwm = re.search(r"VmHWM:\s+(\d+) kB", status)
                    total += int(rss.group(1)) * 1024 if rss else 0
                    if hwm:
                        self.peak[p.pid] = max(self.peak.get(p.pid, 0), int(hwm.group(1)) * 1024)
                    if tick % 5 == 0:
                        for c in p.net_connections(kind="inet"):
                            self.connections.append(f"pid {p.pid}: {c.laddr} -> {c.raddr} {c.status}")
                except (OSError, psutil.Error):
                    pass  # it ended between the listing and the read
            self.tree_peak = max(self.tree_peak, total)
            self._stop.wait(self.interval_s)


def _cli_sync(root: Path, work: Path, timeout_s: float) -> dict[str, Any]:
    """``clearance ingest <root> --source hostile`` in a process of its own (as a new user runs
    it), its process tree watched (``TreeMonitor``); its log is scanned for the workers' network
    guard (``parse.network_blocked ... attempts=N``)."""
    import os
    import subprocess

    env = {**os.environ, "CLEARANCE_STORAGE__DATA_DIR": str(work / "var"), "CLEARANCE_EMBEDDER__KIND": "hash"}
    cmd = [sys.executable, "-c", "from cli.main import run; run()", "ingest", str(root), "--source", SOURCE]
    log_path = work / "cli-sync.log"
    t0 = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=Path(__file__).resolve().parents[1], stdout=log, stderr=log)
        with TreeMonitor(proc.pid) as tree:
            try:
                rc = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
    wall = time.monotonic() - t0
    text = log_path.read_text(errors="replace")
    guard = sum(int(n) for n in re.findall(r"parse\.network_blocked[^\n]*?attempts=(\d+)", text))
    parsers = {pid: hwm for pid, hwm in tree.peak.items() if pid != proc.pid}
    return {"returncode": rc, "wall_s": wall, "tree_peak": tree.tree_peak, "parser_peak": max(parsers.values(), default=0),
            "parent_peak": tree.peak.get(proc.pid, 0), "processes": len(tree.peak), "connections": tree.connections,
            "guard_attempts": guard, "log_tail": text[-2000:]}


def _embed_cost_s(settings: Any) -> float:
    """Seconds the configured embedder takes for ``max_chunks_per_document`` chunks of
    ``chunk_chars`` characters, in ``batch_chunks`` slices (a file's embedding budget)."""
    from retrieval.embedder import build_embedder

    emb = build_embedder(settings.embedder)
    n, step = settings.ingest.max_chunks_per_document, settings.ingest.batch_chunks
    text = ("lorem ipsum dolor sit amet " * 100)[:settings.ingest.chunk_chars]
    t0 = time.monotonic()
    for k in range(0, n, step):
        emb.embed([f"{k + j} {text}" for j in range(min(step, n - k))])
    return time.monotonic() - t0


# -- the battery ---------------------------------------------------------------------------------


@dataclass
class HostileConfig:
    files: int = 500
    seed: int = 9
    small: bool = False  # smaller bombs and huge files (fast tests)
    rusage_bound: bool = True  # also bound RSS by RUSAGE_CHILDREN (only meaningful in a process of its own)
    via_cli: bool = False  # the sync through `clearance ingest` in a process of its own (its tree measured)
    cli_timeout_s: float = 3600.0
    work_dir: Path | None = None
    log: Callable[[str], None] = print


def _push_checks(services: Any, violations: list[str]) -> dict[str, Any]:
    """Through a live server: the 2,000-line e-mail PUT (at most 10 chunks), and a PUT that
    declares a body one byte over ``api.max_body_bytes`` and sends 64 KiB of it (413
    ``body_too_large`` at once, before the rest is sent)."""
    import httpx

    from api.app import create_app
    from testkit.live_server import LiveServer
    from testkit.sources import ETL_WRITER, register_sources

    source = f"{SOURCE}-push"
    register_sources(services, [source], writers=(ETL_WRITER,))
    token = services.auth.dev.mint(ETL_WRITER.split(":", 1)[1], scopes=["clearance:ingest"])
    limit = int(services.settings.api.max_body_bytes)
    with LiveServer(create_app(services.settings, services)) as server:
        r = httpx.put(f"{server.url}/v1/sources/{source}/documents/lines.eml", timeout=120,
                      headers={"authorization": f"Bearer {token}"},
                      json={"filename": "lines.eml", "content": H.email_lines(2000).decode(),
                            "acl": {"allow": ["tenant:acme"]}})
        chunks = r.json().get("chunks") if r.status_code == 200 else None
        if chunks is None or chunks > 10:
            violations.append(f"push of the 2,000-line e-mail: {r.status_code} {r.text[:200]}")
        status, code = _declare_oversized_put(server.port, f"/v1/sources/{source}/documents/huge.eml", token, limit + 1)
    if (status, code) != (413, "body_too_large"):
        violations.append(f"a PUT over api.max_body_bytes got {status} {code}, expected 413 body_too_large")
    return {"push_email_chunks": chunks, "push_over_limit": f"{status} {code}", "api_max_body_bytes": limit}


def _declare_oversized_put(port: int, path: str, token: str, length: int) -> tuple[int, str | None]:
    import socket

    head = (f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head + b'{"filename": "huge.eml", "content": "' + b"a" * 65536)
        raw = b""
        while b"\r\n\r\n" not in raw:
            chunk = s.recv(65536)
            if not chunk:
                break
            raw += chunk
        header, _, body = raw.partition(b"\r\n\r\n")
        size = re.search(rb"(?i)content-length:\s*(\d+)", header)
        while size and len(body) < int(size.group(1)):
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
    status = int(header.split(b" ", 2)[1]) if header.startswith(b"HTTP/") else 0
    try:
        code = json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = None
    return status, code


def run_battery(cfg: HostileConfig) -> dict[str, Any]:
    from app.services import build_services
    from core.settings import EmbedderSettings, Settings, StorageSettings
    from ingest.parse import ERROR_CODES
    from ingest.sandbox import shared_pool
    from ingest.sources import FilesystemSource

    started = time.monotonic()
    own_dir = cfg.work_dir is None
    work = Path(tempfile.mkdtemp(prefix="clearance-hostile-")) if own_dir else Path(cfg.work_dir)  # type: ignore[arg-type]
    root = work / SOURCE
    t0 = time.monotonic()
    expected = generate(root, cfg.files, cfg.seed, cfg.small)
    generate_s = time.monotonic() - t0
    on_disk = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    cfg.log(f"generated {len(expected)} files ({on_disk / 2**20:.0f} MiB) in {generate_s:.1f} s")

    settings = Settings(storage=StorageSettings(data_dir=work / "var"), embedder=EmbedderSettings(kind="hash"))
    pool = shared_pool(settings.ingest)
    pool.close()  # fresh parser processes: their peak RSS is this job's alone
    net = _NetworkLog()
    sandbox_log = logging.getLogger("ingest.sandbox")
    sandbox_log.addHandler(net)
    violations: list[str] = []
    cli: dict[str, Any] | None = None
    if cfg.via_cli:
        cli = _cli_sync(root, work, cfg.cli_timeout_s)
        cfg.log(f"CLI sync: exit {cli['returncode']} in {cli['wall_s']:.1f} s, "
                f"process tree peak {cli['tree_peak'] / 2**20:.0f} MiB")
    services = build_services(settings)
    try:
        if cli is None:
            with ParserMonitor(pool) as monitor:
                t0 = time.monotonic()
                report = services.ingestor.sync(FilesystemSource(root, SOURCE))
                job_s = time.monotonic() - t0
                guard_attempts = pool.network_attempts
            job_id, chunks = report.job_id, report.chunks
        job = next(j for j in services.catalog.jobs(SOURCE, limit=1))
        if cli is not None:
            job_s, job_id, chunks = cli["wall_s"], int(job.id or 0), job.chunks
        items = {i.doc_key.split(f"/{SOURCE}/", 1)[1]: i for i in services.catalog.job_items(job_id)}
        # Catalog and index agree exactly.
        rows = {r.doc_id: r for r in services.catalog.documents(source=SOURCE)}
        ids = [pid for r in rows.values() for pid in r.ids]
        found = {h.id for h in services.index.retrieve(ids)}
        if len(ids) != len(set(ids)) or found != set(ids) or services.index.size() != len(ids):
            violations.append(f"catalog and index disagree: {len(ids)} catalog ids, {len(found)} found, "
                              f"{services.index.size()} in the index")
        unsearchable = _unsearchable(services, [r for rel, r in rows.items() if OK in expected.get(rel, ("", (), None))[1]])
        violations += [f"{d}: ingested but not found by a search for its title" for d in unsearchable[:20]]
        if cli is None:
            isolation = pool.isolation
            push = _push_checks(services, violations)
        else:  # the push API parses in this process: its parser processes are watched as well
            with ParserMonitor(pool) as monitor:
                push = _push_checks(services, violations)
            guard_attempts = pool.network_attempts + cli["guard_attempts"]
            isolation = pool.isolation
        if isolation == "none":
            violations.append("parser processes ran without network isolation")
    finally:
        services.close()
        sandbox_log.removeHandler(net)
        pool.close()  # workers reaped by the template, the template by us: counted in RUSAGE_CHILDREN
    rusage_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024

    codes: Counter[str] = Counter()
    by_kind: Counter[str] = Counter()
    valid_total = valid_ingested = tolerated_ingested = 0
    amplified: dict[str, int] = {}
    for rel, (kind, outcome, max_chunks) in sorted(expected.items()):
        by_kind[kind] += 1
        item = items.get(rel)
        if item is None:
            violations.append(f"{rel}: no outcome in the job")
            continue
        if item.outcome == "failed":
            codes[str(item.error_code)] += 1
            if item.error_code not in ERROR_CODES:
                violations.append(f"{rel}: unstable error code {item.error_code!r}: {item.error_message}")
            elif item.error_code not in outcome:
                violations.append(f"{rel} ({kind}): failed with {item.error_code}, expected {sorted(outcome)}: "
                                  f"{item.error_message}")
            elif OK in outcome and len(outcome) == 1:
                violations.append(f"{rel}: a valid file failed: {item.error_code}: {item.error_message}")
        elif item.outcome == "added":
            row = rows.get(rel)
            if OK not in outcome:
                violations.append(f"{rel} ({kind}): ingested, expected {sorted(outcome)}")
            elif row is None or not row.ids or item.chunks < 1:
                violations.append(f"{rel}: reported added but has no chunks in the catalog")
            elif max_chunks is not None and item.chunks > max_chunks:
                violations.append(f"{rel} ({kind}): {item.chunks} chunks, at most {max_chunks} allowed")
            elif len(outcome) == 1:
                valid_ingested += 1
            else:
                tolerated_ingested += 1
        else:
            violations.append(f"{rel}: unexpected outcome {item.outcome}")
        if max_chunks is not None and item.outcome == "added":
            amplified[rel] = item.chunks
        valid_total += int(outcome == frozenset({OK}))
    psutil_peak = max(monitor.peak.values(), default=0)
    if cli is not None:
        psutil_peak = max(psutil_peak, cli["parser_peak"])
    if not monitor.peak:
        violations.append("the parser processes were never observed")
    cost = _costs(settings, items, violations)
    if cli is not None:
        if cli["tree_peak"] > TREE_RSS_GOAL:
            violations.append(f"CLI sync process tree peaked at {cli['tree_peak'] / 2**20:.0f} MiB, "
                              f"over {TREE_RSS_GOAL / 2**20:.0f} MiB")
        if cli["returncode"] not in (0, 1) or job.state != "done":
            violations.append(f"CLI sync exited {cli['returncode']}: {cli['log_tail'][-500:]}")
    bound = max(psutil_peak, rusage_peak) if cfg.rusage_bound else psutil_peak
    if bound > RSS_LIMIT:
        violations.append(f"parser peak RSS {bound / 2**20:.0f} MiB over {RSS_LIMIT / 2**20:.0f} MiB")
    if job.state != "done":
        violations.append(f"job ended {job.state}")
    network = max(net.attempts, guard_attempts) + len(monitor.connections) + (len(cli["connections"]) if cli else 0)
    if network:
        violations.append(f"network attempts: guard {max(net.attempts, guard_attempts)} ({net.files[:5]}), "
                          f"sockets {(monitor.connections + (cli['connections'] if cli else []))[:5]}")
    bad_total = sum(1 for _, o, _ in expected.values() if OK not in o)
    figures = {
        "files": len(expected),
        "files_on_disk_mib": round(on_disk / 2**20, 1),
        "files_by_kind": dict(by_kind),
        "bad_files": bad_total,
        "bad_files_errored_with_expected_code": sum(
            1 for rel, (_, o, _) in expected.items() if OK not in o and rel in items
            and items[rel].outcome == "failed" and items[rel].error_code in o),
        "errors_by_code": dict(sorted(codes.items(), key=lambda kv: -kv[1])),
        "valid_ingested": f"{valid_ingested}/{valid_total}",
        "amplifying_chunks": amplified,
        "truncated_text_ingested": tolerated_ingested,
        "valid_searchable": f"{valid_total - len(unsearchable)}/{valid_total}",
        "chunks": chunks,
        "job_completed": job.state == "done",
        "sync_via": "clearance ingest (own process)" if cli else "Ingestor.sync (in process)",
        "job_wall_s": round(job_s, 1),
        **({"cli_exit": cli["returncode"], "cli_process_tree_peak_rss_mib": round(cli["tree_peak"] / 2**20, 1),
            "cli_parent_peak_rss_mib": round(cli["parent_peak"] / 2**20, 1),
            "cli_processes_seen": cli["processes"],
            "tree_rss_goal_mib": round(TREE_RSS_GOAL / 2**20)} if cli else {}),
        **cost,
        "generate_s": round(generate_s, 1),
        "parser_processes_seen": len(monitor.peak),
        "parser_peak_rss_mib": round(psutil_peak / 2**20, 1),
        "parser_peak_rss_rusage_mib": round(rusage_peak / 2**20, 1) if cfg.rusage_bound else None,
        "network_attempts": network,
        "parser_isolation": isolation,
        **push,
        "wall_s": round(time.monotonic() - started, 1),
    }
    passed = not violations and valid_total > 0 and valid_ingested == valid_total and bad_total > 0
    if own_dir:
        shutil.rmtree(work, ignore_errors=True)
    return {"passed": passed, "figures": figures, "violations": violations}


def _unsearchable(services: Any, rows: list[Any]) -> list[str]:
    """Documents a BM25 search for their title (as a tenant-wide reader) does not find."""
    from core.types import Entitlements, Scope

    scope = Scope(Entitlements("battery", "hostile", services.settings.ingest.tenant, frozenset({"tenant:acme"})))
    missing = []
    for row in rows:
        query = row.title or row.doc_id
        res = services.search_unaudited.search(scope, query, top_k=100, mode="bm25", group_by="document")
        if row.doc_id not in {h.provenance.get("doc_id") for h in res.hits}:
            missing.append(row.doc_id)
    return missing


def _costs(settings: Any, items: dict[str, Any], violations: list[str]) -> dict[str, Any]:
    """The most one file cost (its job item's time: parse, embed, write) against the goal:
    ``parse_timeout_s`` plus embedding ``max_chunks_per_document`` chunks."""
    if not items:
        return {}
    worst = max(items, key=lambda rel: items[rel].duration_ms)
    worst_s = items[worst].duration_ms / 1000
    budget = settings.ingest.parse_timeout_s + _embed_cost_s(settings)
    if worst_s > budget:
        violations.append(f"{worst} cost {worst_s:.1f} s, over {budget:.1f} s (parse timeout + embedding "
                          f"{settings.ingest.max_chunks_per_document} chunks)")
    return {"max_file_s": round(worst_s, 2), "max_file": worst, "file_budget_s": round(budget, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m battery.hostile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--in-process", action="store_true",
                        help="sync in this process (Ingestor.sync) instead of `clearance ingest` in its own")
    args = parser.parse_args(argv)
    started = time.time()
    result = run_battery(HostileConfig(files=args.files, seed=args.seed, via_cli=not args.in_process))
    return report("hostile", result, argv, started)


if __name__ == "__main__":
    sys.exit(main())
