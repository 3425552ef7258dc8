"""The messages between the caller and its parser processes. JSON and raw bytes only: no pickle
crosses the boundary, so a subverted worker cannot run code in the caller through its replies.

Control channel (caller <-> template, a socketpair): one JSON object per line; a ``fork`` reply
carries the new worker's socket as an SCM_RIGHTS file descriptor.
Worker channel (caller <-> worker, a socketpair):
- request: ``HEAD`` (header length), a JSON header, then ``size`` bytes of content. The header
  is ``{"filename", "size", "limits"}`` for a parse, ``{"op": "probe", ...}`` for a network probe;
- reply: ``LEN`` (body length), then a JSON body: ``{"ok": true, "elements": [[kind, text,
  depth, page], ...]}`` or ``{"ok": false, "code", "message"}``, each with ``network_attempts``;
  the first message of a worker is ``{"ready": true, ...}``.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from core.settings import IngestSettings

HEAD = struct.Struct(">I")  # request: header length, then JSON header, then the content bytes
LEN = struct.Struct(">Q")  # reply: body length, then a JSON body
IO_BLOCK = 4 * 1024 * 1024
# The settings ``parse`` reads; only these cross to the worker, so unrelated settings never have
# to survive a JSON round trip.
PARSE_LIMITS = {"max_file_bytes", "ooxml_max_uncompressed_bytes", "ooxml_max_compression_ratio",
                "ooxml_max_members", "max_attachment_depth", "plain_text_elements", "max_elements_per_document"}


def request(header: dict[str, Any]) -> bytes:
    data = json.dumps(header).encode()
    return HEAD.pack(len(data)) + data


def parse_request(filename: str, size: int, limits: IngestSettings) -> bytes:
    return request({"filename": filename, "size": size, "limits": limits.model_dump(mode="json", include=PARSE_LIMITS)})


def encode(reply: dict[str, Any]) -> bytes:
    return json.dumps(reply, ensure_ascii=False).encode("utf-8", errors="replace")


def send(out: Any, body: bytes) -> None:
    out.write(LEN.pack(len(body)))
    out.write(body)
    out.flush()


def control_line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"
