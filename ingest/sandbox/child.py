"""The parser processes' side: the template that forks workers, and the workers that parse.

Invariants:
- the template isolates itself from the network (``limits.isolate_network``) before it imports
  anything that could start a thread or a connection, and says which isolation is in force in
  its first message, before its warm-up; every worker it forks inherits it;
- on top of that, Python-level network calls (connect, name resolution) raise and are counted,
  so an attempt shows up in the caller's log even when the kernel would have refused it anyway;
- a worker never outlives the template, never dumps core, and never grows past its address-space
  cap; after a ``MemoryError`` it leaves rather than reuse a heap that hit the cap;
- a worker's reply is JSON (``wire``), whatever the parser raised.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

from core.errors import IngestError
from core.settings import IngestSettings
from ingest.parse import offline_environment, parse
from ingest.sandbox import limits, wire

log = logging.getLogger(__name__)


def template_main(ctl_fd: int, methods: list[str]) -> None:
    os.dup2(2, 1)  # anything a library prints goes to stderr
    # First, while single-threaded: namespaces and seccomp filters bind the calling thread.
    isolation = limits.isolate_network(methods)
    ctl = socket.socket(fileno=ctl_fd)
    ctl.sendall(wire.control_line({"isolation": isolation}))  # the caller may refuse it before the warm-up
    guard = _harden()
    _warm_up()
    if threading.active_count() != 1:  # fork copies one thread: others' locks would stay held
        log.warning("parse.template_threads count=%d", threading.active_count())
    ctl.sendall(wire.control_line({"ready": True}))
    requests = ctl.makefile("rb")
    for line in requests:  # ends when the caller closes the socket or exits
        req = json.loads(line)
        if req["op"] == "fork":
            ours, theirs = socket.socketpair()
            template = os.getpid()
            pid = os.fork()
            if pid == 0:
                requests.close()
                ctl.close()
                ours.close()
                _worker_process(theirs, int(req["memory_bytes"]), guard, template)  # never returns
            theirs.close()
            socket.send_fds(ctl, [wire.control_line({"pid": pid})], [ours.fileno()])
            ours.close()
        elif req["op"] == "reap":
            ctl.sendall(wire.control_line({"status": _reap(int(req["pid"]))}))
    os._exit(0)  # at once: tearing down the loaded libraries only delays the workers' end


def _reap(pid: int) -> str:
    try:
        deadline = time.monotonic() + 5
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:  # it ignored the end of its input
                os.kill(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
                break
            time.sleep(0.01)
    except ChildProcessError:
        return "unknown"
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def _worker_process(sock: socket.socket, memory_bytes: int, guard: list[int], template: int) -> None:
    """Body of a forked worker: serve requests until the caller closes the socket."""
    try:
        os.setsid()  # its own process group, so the caller can kill it and anything it starts
        limits.die_with_parent()
        if os.getppid() != template:  # the template died before the line above took effect
            os._exit(1)
        limit = limits.cap_address_space(memory_bytes)
        replies = sock.makefile("wb")
        requests = sock.makefile("rb")
        wire.send(replies, wire.encode({"ready": True, "address_space_limit": limit, "network_attempts": guard[0]}))
        while True:
            head = requests.read(wire.HEAD.size)
            if len(head) < wire.HEAD.size:
                break  # the caller closed our socket: leave
            header = json.loads(requests.read(wire.HEAD.unpack(head)[0]))
            if header.get("op") == "probe":
                wire.send(replies, wire.encode(_probe(header)))
                continue
            try:
                content = requests.read(int(header["size"]))
                body, code = _handle(header, content, guard)
                del content
            except MemoryError:  # the content itself did not fit
                code = "memory_limit"
                body = wire.encode({"ok": False, "code": code, "message": "file does not fit the memory limit"})
            wire.send(replies, body)
            if code == "memory_limit":
                break  # a heap that hit the cap may be fragmented or half-built: start clean
    except BaseException:  # noqa: BLE001 - report, then leave without running the template's exit code
        import traceback

        traceback.print_exc()
        os._exit(1)
    os._exit(0)


def _handle(header: dict[str, Any], content: bytes, guard: list[int]) -> tuple[bytes, str | None]:
    """The encoded reply and its error code (None on success)."""
    try:
        elements = parse(header["filename"], content, IngestSettings.model_validate(header["limits"]))
        return wire.encode({"ok": True, "network_attempts": guard[0],
                            "elements": [[e.kind, e.text, e.depth, e.page] for e in elements]}), None
    except IngestError as exc:
        reply = {"ok": False, "code": exc.code, "message": exc.message}
    except MemoryError:
        reply = {"ok": False, "code": "memory_limit", "message": "parse exceeded the memory limit"}
    except Exception as exc:  # parse() maps library errors; this is a bug of ours
        reply = {"ok": False, "code": "parse_failed", "message": f"{type(exc).__name__}: {exc}"[:500]}
    reply["network_attempts"] = guard[0]
    return wire.encode(reply), str(reply["code"])


def _probe(header: dict[str, Any]) -> dict[str, str]:
    """What the network does for code in this worker, through the C-level calls a native parser
    would use (``_socket``, beneath the Python-level guard): each outcome as ``ok`` or the error."""
    import _socket

    host, port, udp_port = str(header["host"]), int(header["port"]), int(header["udp_port"])
    name = str(header.get("name", "example.com"))
    timeout = float(header.get("timeout_s", 2.0))
    out: dict[str, str] = {}

    def attempt(key: str, call: Any) -> None:
        try:
            call()
            out[key] = "ok"
        except OSError as exc:
            out[key] = f"{type(exc).__name__}: {exc}"

    def connect() -> None:
        s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
        try:
            s.settimeout(timeout)
            s.connect((host, port))
        finally:
            s.close()

    def datagram() -> None:  # what a resolver sends to its name server
        s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
        try:
            s.sendto(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00", (host, udp_port))
        finally:
            s.close()

    attempt("getaddrinfo", lambda: _socket.getaddrinfo(name, 443))
    attempt("gethostbyname", lambda: _socket.gethostbyname(name))
    attempt("connect", connect)
    attempt("sendto", datagram)
    return out


def _harden() -> list[int]:
    """Process-wide restrictions, set before anything heavy is imported; returns the counter of
    refused network calls (a one-item list the guard increments)."""
    import warnings

    # thinc imports torch when it is installed: ~0.5 GB of address space and a second of start-up
    # for nothing a parse uses. None in sys.modules makes `import torch` an ImportError.
    sys.modules.setdefault("torch", None)  # type: ignore[arg-type]
    attempts = [0]

    def refuse(*args: object, **kwargs: object) -> Any:
        attempts[0] += 1
        raise OSError("network access is disabled in the parse sandbox")

    # Our own sockets are socketpairs, made before this and never connected.
    socket.socket.connect = refuse  # type: ignore[method-assign]
    socket.socket.connect_ex = refuse  # type: ignore[method-assign]
    socket.create_connection = refuse  # type: ignore[assignment]
    for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "getnameinfo"):
        setattr(socket, name, refuse)
    limits.no_core_dumps()
    warnings.simplefilter("ignore")
    for name in ("unstructured", "pypdf"):
        logging.getLogger(name).setLevel(logging.ERROR)
    offline_environment()
    return attempts


def _warm_up() -> None:
    """Import every partitioner and load the spaCy model in the template, so that forked
    workers start with them (shared copy-on-write) and the memory cap counts only the parse."""
    import unstructured.partition.docx  # noqa: F401
    import unstructured.partition.email  # noqa: F401
    import unstructured.partition.html  # noqa: F401
    import unstructured.partition.md  # noqa: F401
    import unstructured.partition.pptx  # noqa: F401
    import unstructured.partition.xlsx  # noqa: F401
    from pypdf import PdfReader  # noqa: F401
    from unstructured.partition.auto import partition  # noqa: F401

    # Our own text, not a document: it loads the model and fills lazy caches before any fork.
    parse("warm-up.txt", b"WARM UP\n\nThe worker loads its language model once. Then it parses files.\n")
