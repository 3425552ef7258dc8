"""The few pieces of IMAP syntax the IMAP connector reads, parsed without trusting the server.

``imaplib`` hands back raw response lines (and ``(prefix, literal)`` tuples for literals); these
helpers turn them into tokens, parse LIST / GETACL / FETCH / ESEARCH answers, quote mailbox names
for commands, and decode modified UTF-7 names (RFC 3501 5.1.3) for display. Nothing here does I/O.

Token grammar (enough for the answers we read): an atom is a ``str``; a quoted string is a
``str`` with its escapes undone; ``NIL`` is ``None``; a literal is ``bytes``; a parenthesised
list is a ``list``. Unbalanced parentheses are tolerated (the list just ends), never a crash.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone

Token = str | bytes | None | list["Token"]
Piece = bytes | tuple[bytes, bytes]

_LITERAL_TAIL = re.compile(r"\{\d+\+?\}\s*$")
_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
_INTERNALDATE = re.compile(r"^\s*(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})\s*$")


def group_responses(data: Sequence[object]) -> list[list[Piece]]:
    """imaplib's data items grouped per response: a ``(prefix, literal)`` tuple continues with the
    next tuples and ends with the next ``bytes`` item."""
    out: list[list[Piece]] = []
    current: list[Piece] | None = None
    for item in data:
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], bytes) and isinstance(item[1], bytes):
            if current is None:
                current = []
                out.append(current)
            current.append((item[0], item[1]))
        elif isinstance(item, bytes):
            if current is not None:
                current.append(item)
                current = None
            else:
                out.append([item])
    return out


def tokens(pieces: Sequence[Piece]) -> list[Token]:
    """The tokens of one response (its pieces as ``group_responses`` made them)."""
    root: list[Token] = []
    stack: list[list[Token]] = [root]
    for piece in pieces:
        text_b, literal = piece if isinstance(piece, tuple) else (piece, None)
        text = text_b.decode("utf-8", "surrogateescape")
        if literal is not None:
            m = _LITERAL_TAIL.search(text)
            text = text[: m.start()] if m else text
        _scan(text, stack)
        if literal is not None:
            stack[-1].append(literal)
    return root


def _scan(text: str, stack: list[list[Token]]) -> None:
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \r\n\t":
            i += 1
        elif c == "(":
            new: list[Token] = []
            stack[-1].append(new)
            stack.append(new)
            i += 1
        elif c == ")":
            if len(stack) > 1:
                stack.pop()
            i += 1
        elif c == '"':
            j, buf = i + 1, []
            while j < n and text[j] != '"':
                if text[j] == "\\" and j + 1 < n:
                    j += 1
                buf.append(text[j])
                j += 1
            stack[-1].append("".join(buf))
            i = j + 1
        else:
            j = i
            depth = 0  # BODY[...] may hold spaces and parentheses inside its brackets
            while j < n and (depth or text[j] not in ' ()"\r\n\t'):
                depth += (text[j] == "[") - (text[j] == "]")
                depth = max(depth, 0)
                j += 1
            atom = text[i:j]
            stack[-1].append(None if atom.upper() == "NIL" else atom)
            i = j


def as_text(token: Token) -> str | None:
    """A string-like token as ``str`` (a literal decoded as UTF-8), else ``None``."""
    if isinstance(token, str):
        return token
    if isinstance(token, bytes):
        return token.decode("utf-8", "surrogateescape")
    return None


def quote(name: str) -> str:
    """A mailbox name or identifier as an IMAP quoted string; refuses what a quoted string cannot carry."""
    if any(c in name for c in "\r\n\x00") or not name.isascii():
        raise ValueError(f"cannot quote {name!r} for IMAP")
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def decode_mutf7(name: str) -> str:
    """A modified UTF-7 mailbox name (``Entw&APw-rfe``) as Unicode (``Entwürfe``); undecodable
    parts are left as they are."""
    def repl(m: re.Match[str]) -> str:
        b64 = m.group(1)
        if not b64:
            return "&"
        try:
            raw = base64.b64decode(b64.replace(",", "/") + "=" * (-len(b64) % 4))
            return raw.decode("utf-16-be")
        except (ValueError, UnicodeDecodeError):
            return m.group(0)

    return re.sub(r"&([A-Za-z0-9+,]*)-", repl, name)


def parse_internaldate(text: str) -> datetime | None:
    """``04-Dec-2026 20:28:54 +0000`` as an aware datetime (locale-independent), or ``None``."""
    m = _INTERNALDATE.match(text)
    if not m or m.group(2).title() not in _MONTHS:
        return None
    day, mon, year, hh, mm, ss, sign, oh, om = m.groups()
    offset = timedelta(hours=int(oh), minutes=int(om)) * (1 if sign == "+" else -1)
    try:
        return datetime(int(year), _MONTHS[mon.title()], int(day), int(hh), int(mm), int(ss), tzinfo=timezone(offset))
    except ValueError:
        return None


def expand_sequence_set(text: str, limit: int) -> list[int]:
    """``1:3,7`` as ``[1, 2, 3, 7]``; raises ``ValueError`` past ``limit`` numbers or on junk."""
    out: list[int] = []
    for part in text.split(","):
        if not part:
            continue
        lo_s, _, hi_s = part.partition(":")
        lo = int(lo_s)
        hi = int(hi_s) if hi_s else lo
        lo, hi = min(lo, hi), max(lo, hi)
        if len(out) + (hi - lo + 1) > limit:
            raise ValueError(f"more than {limit} UIDs in one answer")
        out.extend(range(lo, hi + 1))
    return out


def compact_set(uids: Sequence[int]) -> str:
    """Sorted UIDs as a compact sequence set (``1:3,7``)."""
    ordered = sorted(set(uids))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}:{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def pairs(items: Sequence[Token]) -> Iterator[tuple[str, Token]]:
    """A FETCH attribute list (``UID 5 RFC822.SIZE 10 ...``) as (upper-cased name, value) pairs."""
    for i in range(0, len(items) - 1, 2):
        key = as_text(items[i])
        if key is not None:
            yield key.upper(), items[i + 1]
