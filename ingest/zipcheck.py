"""Structure of a zip container (docx, xlsx, pptx), checked from its raw bytes before any zip
library or parser opens it.

Nothing extracts archives to disk today, so this is defence in depth: zip readers disagree on
malformed archives (which end record, which of two headers, which of two same-named entries), and
a future parser that extracts must not be the first to find out.

Invariants: a file that passes has
- one end-of-central-directory record ending at the last byte (its comment included): no data
  after it, and no second archive before it (the central directory sits exactly where the record
  says, and the first entry starts at byte 0) -> else ``zip_trailing_data``;
- declared entry counts (zip64 included) equal to the central directory's records, no entry or
  local header outside the file or past the central directory, no two entries sharing bytes, one
  disk -> else ``zip_implausible``; more declared entries than ``ooxml_max_members`` -> ``zip_bomb``;
- local headers that agree with the central directory: name, method, and CRC and sizes unless a
  data descriptor carries them -> else ``zip_header_mismatch``;
- entry names that are non-empty, at most ``MAX_NAME_BYTES``, relative, without ``..``, drive
  letter, backslash, control or bidi character, and unique ignoring case (OPC part names are
  case-insensitive) -> else ``zip_unsafe_name``;
- no symlink, device, FIFO or socket entry (unix mode bits of the external attributes) -> else
  ``zip_symlink``.
A file too short to hold an end record is ``corrupt_file``, as a truncated zip always was.
The work is linear in the central directory and never inflates anything.
"""

from __future__ import annotations

import re
import stat
import struct
from dataclasses import dataclass

from core.errors import IngestError
from core.settings import IngestSettings

# OOXML part names are short paths; a long name is only ever an attack on a path buffer.
MAX_NAME_BYTES = 1024

_EOCD = struct.Struct("<4s4H2LH")  # signature, disk, cd disk, entries here, entries, cd size, cd offset, comment
_LOCATOR = struct.Struct("<4sLQL")  # zip64 locator: signature, cd disk, zip64 record offset, disks
_EOCD64 = struct.Struct("<4sQ2H2L4Q")  # zip64 record: signature, size, versions, disks, counts, cd size, cd offset
_CENTRAL = struct.Struct("<4s6H3L5H2L")
_LOCAL = struct.Struct("<4s5H3L2H")
_SIG_EOCD, _SIG_LOCATOR, _SIG_EOCD64 = b"PK\x05\x06", b"PK\x06\x07", b"PK\x06\x06"
_SIG_CENTRAL, _SIG_LOCAL = b"PK\x01\x02", b"PK\x03\x04"
_MAX_COMMENT = 0xFFFF
_FLAG_DESCRIPTOR, _FLAG_UTF8 = 0x08, 0x800
_ZIP64_EXTRA, _UNICODE_PATH_EXTRA = 0x0001, 0x7075
_U16, _U32 = 0xFFFF, 0xFFFFFFFF
# Explicit marks that reorder how a name is displayed (``evil‮xcod.exe``).
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_DRIVE = re.compile(r"^[A-Za-z]:")
_SPECIAL = {stat.S_IFLNK: "a symlink", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
            stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket"}


@dataclass(frozen=True)
class _Entry:
    name: bytes
    flags: int
    method: int
    crc: int
    compressed: int
    size: int
    offset: int


def check_zip(content: bytes, limits: IngestSettings) -> None:
    """Raise ``IngestError`` unless ``content`` is a single well-formed zip archive (see module)."""
    eocd_at, cd_end, cd_offset, cd_size, declared = _end_records(content)
    if cd_offset + cd_size != cd_end:
        raise _error("zip_trailing_data", f"the central directory is {cd_end - cd_size - cd_offset} bytes from where "
                     "the end record puts it: data before the archive, or two archives concatenated")
    if declared * _CENTRAL.size > cd_size:
        raise _error("zip_implausible", f"{declared} entries cannot fit a {cd_size}-byte central directory")
    if declared > limits.ooxml_max_members:
        raise _error("zip_bomb", f"zip declares {declared} members (limit {limits.ooxml_max_members})")
    entries = _central_directory(content, cd_offset, cd_end)
    if len(entries) != declared:
        raise _error("zip_implausible", f"the end record declares {declared} entries, the central directory "
                     f"holds {len(entries)}")
    _check_names(entries)
    _check_local_headers(content, entries, cd_offset)


def _error(code: str, message: str) -> IngestError:
    return IngestError(message, code=code)


def _end_records(content: bytes) -> tuple[int, int, int, int, int]:
    """(end record offset, end of the central directory, its declared offset and size, entries)."""
    n = len(content)
    floor = max(0, n - _EOCD.size - _MAX_COMMENT)
    at = content.rfind(_SIG_EOCD, floor)
    found_short = None  # an end record followed by more bytes than its comment
    while at >= 0:
        if at + _EOCD.size <= n:
            fields = _EOCD.unpack_from(content, at)
            end = at + _EOCD.size + fields[7]
            if end == n:
                break
            if end < n and found_short is None:
                found_short = at
        at = content.rfind(_SIG_EOCD, floor, at)
    if at < 0:
        if found_short is None and content.rfind(_SIG_EOCD, 0, floor) >= 0:
            found_short = content.rfind(_SIG_EOCD, 0, floor)  # followed by more than a comment can hold
        if found_short is not None:
            raise _error("zip_trailing_data", f"{n - found_short - _EOCD.size} bytes after the end record")
        raise _error("corrupt_file", "corrupt or truncated zip: no end-of-central-directory record")
    _, disk, cd_disk, here, total, cd_size, cd_offset, _ = _EOCD.unpack_from(content, at)
    cd_end = at
    zip64 = at >= _LOCATOR.size and content[at - _LOCATOR.size:at - _LOCATOR.size + 4] == _SIG_LOCATOR
    if zip64:
        _, z_disk, record_at, disks = _LOCATOR.unpack_from(content, at - _LOCATOR.size)
        if z_disk != 0 or disks != 1:
            raise _error("zip_implausible", "a multi-disk zip64 archive")
        if record_at + _EOCD64.size > at - _LOCATOR.size or content[record_at:record_at + 4] != _SIG_EOCD64:
            raise _error("zip_implausible", "the zip64 locator points outside the file or at no zip64 record")
        _, size, _, _, disk, cd_disk, here, total, cd_size, cd_offset = _EOCD64.unpack_from(content, record_at)
        if record_at + 12 + size != at - _LOCATOR.size:
            raise _error("zip_trailing_data", "data between the zip64 end record and its locator")
        cd_end = record_at
    elif _U16 in (here, total) or _U32 in (cd_size, cd_offset):
        raise _error("zip_implausible", "the end record defers to a zip64 record that is not there")
    if disk != 0 or cd_disk != 0 or here != total:
        raise _error("zip_implausible", f"a multi-disk archive ({here} of {total} entries on disk {disk})")
    if cd_size > cd_end:
        raise _error("zip_implausible", f"a {cd_size}-byte central directory in front of byte {cd_end}")
    return at, cd_end, cd_offset, cd_size, total


def _central_directory(content: bytes, start: int, end: int) -> list[_Entry]:
    entries: list[_Entry] = []
    at = start
    while at < end:
        if at + _CENTRAL.size > end or content[at:at + 4] != _SIG_CENTRAL:
            raise _error("zip_implausible", f"no central directory record at byte {at}")
        (_, made_by, _, flags, method, _, _, crc, compressed, size, name_len, extra_len, comment_len, disk, _,
         external, offset) = _CENTRAL.unpack_from(content, at)
        name_at = at + _CENTRAL.size
        extra_at = name_at + name_len
        at = extra_at + extra_len + comment_len
        if at > end:
            raise _error("zip_implausible", "a central directory record runs past the directory")
        name = content[name_at:extra_at]
        extras = _extras(content[extra_at:extra_at + extra_len])
        wide = _zip64_values(extras.get(_ZIP64_EXTRA, b""), [(size, _U32), (compressed, _U32), (offset, _U32),
                                                               (disk, _U16)])
        size, compressed, offset, disk = wide
        if disk != 0:
            raise _error("zip_implausible", f"entry {_show(name)} starts on disk {disk}")
        kind = _SPECIAL.get(stat.S_IFMT(external >> 16))
        if kind is not None:
            raise _error("zip_symlink", f"entry {_show(name)} is {kind}")
        if _UNICODE_PATH_EXTRA in extras:  # readers that honour it take this name instead
            _check_name(extras[_UNICODE_PATH_EXTRA][5:], utf8=True)
        entries.append(_Entry(name, flags, method, crc, compressed, size, offset))
    return entries


def _extras(data: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    at = 0
    while at + 4 <= len(data):
        tag, size = struct.unpack_from("<2H", data, at)
        out.setdefault(tag, data[at + 4:at + 4 + size])
        at += 4 + size
    return out


def _zip64_values(extra: bytes, fields: list[tuple[int, int]]) -> list[int]:
    """Each field that holds its all-ones marker is read, in order, from the zip64 extra field."""
    out, at = [], 0
    for value, marker in fields:
        if value == marker:
            width = 8 if marker == _U32 else 4
            if at + width > len(extra):
                raise _error("zip_implausible", "a zip64 size or offset is missing from its extra field")
            value = int.from_bytes(extra[at:at + width], "little")
            at += width
        out.append(value)
    return out


def _check_names(entries: list[_Entry]) -> None:
    seen: set[str] = set()
    for e in entries:
        name = _check_name(e.name, utf8=bool(e.flags & _FLAG_UTF8))
        key = name.casefold()
        if key in seen:
            raise _error("zip_unsafe_name", f"two entries are named {_show(e.name)}")
        seen.add(key)


def _check_name(raw: bytes, *, utf8: bool) -> str:
    if not raw:
        raise _error("zip_unsafe_name", "an entry has an empty name")
    if len(raw) > MAX_NAME_BYTES:
        raise _error("zip_unsafe_name", f"an entry name of {len(raw)} bytes (limit {MAX_NAME_BYTES})")
    try:
        name = raw.decode("utf-8") if utf8 else raw.decode("cp437")
    except UnicodeDecodeError:
        raise _error("zip_unsafe_name", f"entry name {_show(raw)} is not valid UTF-8") from None
    why = (
        "is absolute" if name.startswith("/") else
        "has a drive letter" if _DRIVE.match(name) else
        "has a backslash" if "\\" in name else
        "climbs out with .." if ".." in name.split("/") else
        "has a control character" if any(c < " " or "\x7f" <= c <= "\x9f" for c in name) else
        "has a bidi control character" if any(c in _BIDI for c in name) else
        None
    )
    if why is not None:
        raise _error("zip_unsafe_name", f"entry name {_show(raw)} {why}")
    return name


def _check_local_headers(content: bytes, entries: list[_Entry], cd_start: int) -> None:
    spans = []
    for e in entries:
        at = e.offset
        if at + _LOCAL.size > cd_start or content[at:at + 4] != _SIG_LOCAL:
            raise _error("zip_implausible", f"entry {_show(e.name)} has no local header at byte {at}")
        _, _, flags, method, _, _, crc, compressed, size, name_len, extra_len = _LOCAL.unpack_from(content, at)
        name_at = at + _LOCAL.size
        data_at = name_at + name_len + extra_len
        if content[name_at:name_at + name_len] != e.name:
            raise _error("zip_header_mismatch", f"entry {_show(e.name)} is named "
                         f"{_show(content[name_at:name_at + name_len])} in its local header")
        if method != e.method:
            raise _error("zip_header_mismatch", f"entry {_show(e.name)}: compression method {method} locally, "
                         f"{e.method} in the central directory")
        if not flags & _FLAG_DESCRIPTOR:
            local_extras = _extras(content[name_at + name_len:data_at])
            if _U32 in (size, compressed) and _ZIP64_EXTRA in local_extras:
                size, compressed = _zip64_values(local_extras[_ZIP64_EXTRA], [(_U32, _U32), (_U32, _U32)])
            if (crc, compressed, size) != (e.crc, e.compressed, e.size):
                raise _error("zip_header_mismatch", f"entry {_show(e.name)}: CRC or sizes differ between its "
                             "local header and the central directory")
        end = data_at + e.compressed  # a data descriptor, if any, follows: between entries
        if end > cd_start:
            raise _error("zip_implausible", f"entry {_show(e.name)} runs past the central directory")
        spans.append((at, end, e.name))
    spans.sort()
    if spans and spans[0][0] != 0:
        raise _error("zip_trailing_data", f"{spans[0][0]} bytes before the first entry")
    for (_, end, name), (start, _, other) in zip(spans, spans[1:]):
        if start < end:  # overlapping entries: how a small zip inflates to gigabytes many times over
            raise _error("zip_implausible", f"entries {_show(name)} and {_show(other)} share bytes")


def _show(name: bytes) -> str:
    return repr(name[:80].decode("utf-8", errors="replace")) + ("…" if len(name) > 80 else "")
