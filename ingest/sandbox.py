"""Parse untrusted documents in separate, resource-limited worker processes.

Invariants:
- the calling process never parses: it checks extension, size and emptiness, then exchanges raw
  bytes and JSON with a worker; no pickle crosses the boundary, so a subverted worker cannot run
  code in the caller through its replies;
- a call returns elements or raises a ``ClearanceError``: ``IngestError`` with a per-file code
  (``ingest.parse.ERROR_CODES``), or ``BackendUnavailableError`` (``parser_unavailable``) when no
  worker can be had; it never waits longer than ``parse_timeout_s`` for a parse;
- over ``parse_timeout_s`` the worker is killed (``parse_timeout``); a worker's address space is
  capped at its starting size plus ``parse_memory_bytes`` (``memory_limit`` when a parse hits
  it); a worker that dies mid-parse gives ``parse_killed``; in each case, and after
  ``parse_worker_max_jobs`` parses, the next call gets a fresh worker;
- workers have no Python-level network (socket connect and name resolution raise, and count),
  never import torch, and die with the process that forked them.

Shape: each pool starts one *template* process that imports every parser and loads the spaCy
model (~5 s, once), never parses a document, and forks a worker whenever one is needed. A fresh worker
therefore costs a fork (milliseconds), not the imports, so a stream of files that kill their
workers cannot turn restarts into a denial of service, and workers share the loaded model
copy-on-write. The template is single-threaded when it forks (checked at start-up).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from core.errors import BackendUnavailableError, IngestError
from core.settings import IngestSettings
from ingest.parse import Element, content_type_for, offline_environment, parse

log = logging.getLogger(__name__)

_ROOT = str(Path(__file__).resolve().parent.parent)
_HEAD = struct.Struct(">I")  # request: header length, then JSON header, then the content bytes
_LEN = struct.Struct(">Q")  # reply: body length, then a JSON body
_IO_BLOCK = 4 * 1024 * 1024
# The settings ``parse`` reads; only these cross to the worker, so unrelated settings never have
# to survive a JSON round trip.
_PARSE_LIMITS = {"max_file_bytes", "ooxml_max_uncompressed_bytes", "ooxml_max_compression_ratio",
                 "ooxml_max_members", "max_attachment_depth", "plain_text_elements"}
_CONTROL_TIMEOUT_S = 30.0  # a fork or a reap; the template waits at most 5 s for a worker to exit
# -I: no user site, no PYTHON* variables, no current directory on sys.path; the repository root
# is put there explicitly so the template runs this very code.
_BOOT = "import sys; sys.path.insert(0, sys.argv[1]); from ingest.sandbox import _template_main; _template_main(int(sys.argv[2]))"


class _Timeout(Exception):
    pass


class _Died(Exception):
    pass


# -- caller side ---------------------------------------------------------------------------------


class _Template:
    """The caller's handle on one template process: forks workers and reaps them."""

    def __init__(self, settings: IngestSettings) -> None:
        self._start_timeout_s = settings.parse_worker_start_timeout_s
        self._lock = threading.Lock()  # one control exchange at a time
        self._proc: subprocess.Popen[bytes] | None = None
        self._ctl: socket.socket | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def fork(self, memory_bytes: int) -> tuple[int, socket.socket]:
        """A new worker: its pid and the caller's end of its socket."""
        with self._lock:
            for attempt in (1, 2):  # a template that died is replaced once
                self._ensure_started()
                try:
                    reply, fds = self._exchange({"op": "fork", "memory_bytes": memory_bytes}, fds=1)
                    if len(fds) != 1:
                        raise OSError("no socket in the fork reply")
                    return int(reply["pid"]), socket.socket(fileno=fds[0])
                except (OSError, ValueError, KeyError) as exc:
                    log.warning("parse.template_lost attempt=%d error=%s", attempt, exc)
                    self._kill()
            raise BackendUnavailableError("parser template process keeps failing", code="parser_unavailable")

    def reap(self, pid: int) -> str:
        """Wait for a worker that has exited or been killed; how it ended, in words."""
        with self._lock:
            if self._ctl is None:
                return "unknown"
            try:
                reply, _ = self._exchange({"op": "reap", "pid": pid})
                return str(reply["status"])
            except (OSError, ValueError, KeyError):
                self._kill()  # out of step with us: start over
                return "unknown"

    def close(self) -> None:
        # Bounded wait for the lock: at interpreter exit a daemon thread may hold it mid-start.
        locked = self._lock.acquire(timeout=5)
        try:
            if self._ctl is not None:
                self._ctl.close()  # end of its input: it leaves, and its workers die with it
                self._ctl = None
            if self._proc is not None:
                try:
                    self._proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._kill()
                self._proc = None
        finally:
            if locked:
                self._lock.release()

    def _ensure_started(self) -> None:
        if self._proc is not None and self._proc.poll() is None and self._ctl is not None:
            return
        self._kill()
        ours, theirs = socket.socketpair()
        try:
            self._proc = subprocess.Popen(  # noqa: S603 - our own interpreter and code
                [sys.executable, "-I", "-c", _BOOT, _ROOT, str(theirs.fileno())],
                stdin=subprocess.DEVNULL, env=_worker_env(), pass_fds=(theirs.fileno(),), close_fds=True,
                start_new_session=True,  # a terminal's Ctrl-C goes to the caller, which cleans up
            )
        finally:
            theirs.close()
        self._ctl = ours
        try:
            ours.settimeout(self._start_timeout_s)
            ready, _ = self._receive()
            if not ready.get("ready"):
                raise OSError(f"template failed to start: {ready}")
        except (OSError, ValueError) as exc:
            self._kill()
            raise BackendUnavailableError(f"parser template did not start: {exc}", code="parser_unavailable") from exc
        log.info("parse.template_started pid=%s", self._proc.pid)

    def _exchange(self, request: dict[str, Any], fds: int = 0) -> tuple[dict[str, Any], list[int]]:
        assert self._ctl is not None
        self._ctl.settimeout(_CONTROL_TIMEOUT_S)
        self._ctl.sendall(json.dumps(request).encode() + b"\n")
        return self._receive(fds)

    def _receive(self, fds: int = 0) -> tuple[dict[str, Any], list[int]]:
        assert self._ctl is not None
        data, received, _, _ = socket.recv_fds(self._ctl, 65536, max(fds, 1))
        while data and not data.endswith(b"\n"):  # control messages are small; rarely split
            more = self._ctl.recv(65536)
            if not more:
                break
            data += more
        if not data:
            for fd in received:
                os.close(fd)
            raise OSError("template closed the control socket")
        return json.loads(data), list(received)

    def _kill(self) -> None:
        if self._ctl is not None:
            self._ctl.close()
            self._ctl = None
        if self._proc is not None:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)  # its own group, made at start
            except (ProcessLookupError, PermissionError):
                pass
            self._proc.wait()
            self._proc = None


def _ready(sel: selectors.BaseSelector, deadline: float) -> bool:
    """Wait for the socket until ``deadline``; ``_Timeout`` once it has passed."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _Timeout()
    return bool(sel.select(remaining))


class _Worker:
    """One worker process, used by one thread at a time; forked again on demand."""

    def __init__(self, template: _Template, settings: IngestSettings) -> None:
        self._template = template
        self._memory_bytes = settings.parse_memory_bytes
        self._start_timeout_s = settings.parse_worker_start_timeout_s
        self._max_jobs = settings.parse_worker_max_jobs
        self._sock: socket.socket | None = None
        self.pid: int | None = None
        self._jobs = 0
        self.network_attempts = 0
        self.address_space_limit: int | None = None

    def start(self) -> None:
        if self._sock is not None:
            return
        self.pid, self._sock = self._template.fork(self._memory_bytes)
        self._sock.setblocking(False)
        self._jobs = 0
        try:
            ready = self._read(time.monotonic() + self._start_timeout_s, 1 << 20)
        except (_Timeout, _Died) as exc:
            status = self.kill()
            raise BackendUnavailableError(f"parser worker did not start ({status})", code="parser_unavailable") from exc
        self.address_space_limit = ready.get("address_space_limit")
        self.network_attempts = int(ready.get("network_attempts", 0))

    def parse(self, filename: str, content: bytes, limits: IngestSettings) -> list[Element]:
        self.start()
        header = json.dumps({"filename": filename, "size": len(content),
                             "limits": limits.model_dump(mode="json", include=_PARSE_LIMITS)}).encode()
        deadline = time.monotonic() + limits.parse_timeout_s
        max_reply = 2 * (limits.max_file_bytes + limits.ooxml_max_uncompressed_bytes) + (1 << 20)
        try:
            try:
                self._write(_HEAD.pack(len(header)) + header, deadline)
                self._write(content, deadline)
            except _Died:
                pass  # it may have answered before reading everything (memory_limit): read on
            reply = self._read(deadline, max_reply)
        except _Timeout as exc:
            self.kill()
            raise IngestError(f"parse took longer than {limits.parse_timeout_s:g} s", code="parse_timeout") from exc
        except _Died as exc:
            status = self.kill()
            if str(exc) == "reply too large":
                raise IngestError("extracted text is far larger than the file", code="too_large") from exc
            raise IngestError(f"parser process died ({status})", code="parse_killed") from exc
        self._jobs += 1
        attempts = int(reply.get("network_attempts", 0))
        if attempts > self.network_attempts:
            log.warning("parse.network_blocked file=%s attempts=%d", filename, attempts - self.network_attempts)
        self.network_attempts = attempts
        if reply.get("code") == "memory_limit" or self._jobs >= self._max_jobs:
            self.stop()  # after a MemoryError the worker leaves by itself; its heap is suspect
        if not reply.get("ok"):
            raise IngestError(str(reply.get("message", "parse failed")), code=str(reply.get("code", "parse_failed")))
        return [Element(str(k), str(t), int(d), p if p is None else int(p)) for k, t, d, p in reply["elements"]]

    def _write(self, data: bytes, deadline: float) -> None:
        assert self._sock is not None
        view = memoryview(data)
        with selectors.DefaultSelector() as sel:
            sel.register(self._sock, selectors.EVENT_WRITE)
            while view:
                if not _ready(sel, deadline):
                    continue
                try:
                    view = view[self._sock.send(view[:_IO_BLOCK]):]
                except BlockingIOError:
                    continue
                except OSError as exc:  # broken pipe, reset
                    raise _Died("worker closed its input") from exc

    def _read(self, deadline: float, max_body: int) -> dict[str, Any]:
        assert self._sock is not None
        buf = bytearray()
        need = _LEN.size
        with selectors.DefaultSelector() as sel:
            sel.register(self._sock, selectors.EVENT_READ)
            while len(buf) < need:
                if not _ready(sel, deadline):
                    continue
                try:
                    chunk = self._sock.recv(min(need - len(buf), _IO_BLOCK))
                except BlockingIOError:
                    continue
                except OSError as exc:
                    raise _Died("connection reset") from exc
                if not chunk:
                    raise _Died("end of output")
                buf += chunk
                if need == _LEN.size and len(buf) == need:
                    body = _LEN.unpack(buf)[0]
                    if body > max_body:
                        raise _Died("reply too large")
                    need += body
        reply = json.loads(bytes(buf[_LEN.size:]))
        if not isinstance(reply, dict):
            raise _Died("malformed reply")
        return reply

    def stop(self) -> str:
        """Close its input (it leaves at once when idle) and reap it."""
        if self._sock is None or self.pid is None:
            return "not running"
        self._sock.close()
        self._sock = None
        pid, self.pid = self.pid, None
        return self._template.reap(pid)  # the template kills it after 5 s if it lingers

    def kill(self) -> str:
        if self._sock is None or self.pid is None:
            return "not running"
        try:
            # Safe from pid reuse: the worker stays a zombie until the template reaps it, below.
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return self.stop()


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "DO_NOT_TRACK": "1", "UNSTRUCTURED_DISABLE_NOTICE": "1", "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1", "SCARF_NO_ANALYTICS": "true", "TOKENIZERS_PARALLELISM": "false",
        # Single-threaded BLAS keeps the template single-threaded (safe to fork) and keeps thread
        # stacks and malloc arenas out of the address space the memory cap counts.
        "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2",
    })
    cache = Path(tempfile.gettempdir()) / f"clearance-parse-{os.getuid()}"
    env.setdefault("MPLCONFIGDIR", str(cache / "matplotlib"))
    env.setdefault("XDG_CACHE_HOME", str(cache))
    return env


class ParserPool:
    """A fixed set of lazily forked workers; each call borrows one for the length of its parse,
    so at most ``parse_workers`` parses run at once and further callers wait their turn."""

    def __init__(self, settings: IngestSettings) -> None:
        self.settings = settings
        self._template = _Template(settings)
        self._workers = [_Worker(self._template, settings) for _ in range(settings.parse_workers)]
        self._idle: queue.LifoQueue[_Worker] = queue.LifoQueue()  # most recently used first
        for w in self._workers:
            self._idle.put(w)

    def parse(self, filename: str, content: bytes, settings: IngestSettings | None = None) -> list[Element]:
        """``ingest.parse.parse`` in a worker, with the limits of ``settings`` (default: the
        pool's; ``parse_memory_bytes`` and the worker settings always come from the pool's)."""
        limits = settings or self.settings
        content_type_for(filename)  # cheap refusals need no worker
        if len(content) > limits.max_file_bytes:
            raise IngestError(f"file exceeds {limits.max_file_bytes} bytes", code="too_large")
        if not content or content.isspace():
            raise IngestError("file is empty", code="empty_file")
        worker = self._idle.get()
        try:
            return worker.parse(filename, content, limits)
        finally:
            self._idle.put(worker)

    def warm(self, *, wait: bool = True) -> None:
        """Start the template and every worker now rather than on first use (in a background
        thread unless ``wait``)."""
        def run() -> None:
            taken = [self._idle.get() for _ in self._workers]  # each once, none while in use
            try:
                for worker in taken:
                    worker.start()
            except BackendUnavailableError as exc:
                log.warning("parse.worker_start_failed error=%s", exc.message)
            finally:
                for worker in taken:
                    self._idle.put(worker)

        if wait:
            run()
        else:
            threading.Thread(target=run, name="parser-warmup", daemon=True).start()

    @property
    def pids(self) -> list[int]:
        """Process ids of the live workers (for monitoring; a change means a replacement)."""
        return [w.pid for w in self._workers if w.pid is not None]

    @property
    def template_pid(self) -> int | None:
        """Process id of the template that forks the workers, once started."""
        return self._template.pid

    @property
    def network_attempts(self) -> int:
        """Network calls the workers' guards refused (expected: 0)."""
        return sum(w.network_attempts for w in self._workers)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop idle workers, then the template; a worker still busy after ``timeout_s`` dies
        with the template (at interpreter exit a daemon thread may never give its worker back)."""
        taken = []
        for _ in self._workers:
            try:
                taken.append(self._idle.get(timeout=timeout_s))
            except queue.Empty:
                break
        for worker in taken:
            worker.stop()
        self._template.close()
        for worker in taken:
            self._idle.put(worker)

    def __enter__(self) -> "ParserPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_pools: dict[tuple[Any, ...], ParserPool] = {}
_pools_lock = threading.Lock()
_pools_pid = os.getpid()


def shared_pool(settings: IngestSettings) -> ParserPool:
    """The process-wide pool for these worker settings, made on first use."""
    global _pools_pid
    key = (settings.parse_workers, settings.parse_memory_bytes, settings.parse_worker_max_jobs,
           settings.parse_worker_start_timeout_s)
    with _pools_lock:
        if _pools_pid != os.getpid():  # a forked child must not talk to its parent's workers
            _pools.clear()
            _pools_pid = os.getpid()
        if key not in _pools:
            _pools[key] = ParserPool(settings)
        return _pools[key]


def parse_isolated(filename: str, content: bytes, settings: IngestSettings) -> list[Element]:
    """Elements of one untrusted document, parsed in a worker of the shared pool."""
    return shared_pool(settings).parse(filename, content, settings)


@atexit.register
def shutdown() -> None:
    """Stop the shared pools' processes (also run at interpreter exit)."""
    with _pools_lock:
        pools = list(_pools.values()) if _pools_pid == os.getpid() else []
        _pools.clear()
    for pool in pools:
        pool.close()


# -- template and worker side --------------------------------------------------------------------


def _template_main(ctl_fd: int) -> None:
    os.dup2(2, 1)  # anything a library prints goes to stderr
    ctl = socket.socket(fileno=ctl_fd)
    guard = _harden()
    _warm_up()
    if threading.active_count() != 1:  # fork copies one thread: others' locks would stay held
        log.warning("parse.template_threads count=%d", threading.active_count())
    ctl.sendall(json.dumps({"ready": True}).encode() + b"\n")
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
            socket.send_fds(ctl, [json.dumps({"pid": pid}).encode() + b"\n"], [ours.fileno()])
            ours.close()
        elif req["op"] == "reap":
            ctl.sendall(json.dumps({"status": _reap(int(req["pid"]))}).encode() + b"\n")
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
    """Body of a forked worker: serve parse requests until the caller closes the socket."""
    try:
        os.setsid()  # its own process group, so the caller can kill it and anything it starts
        _die_with_parent()
        if os.getppid() != template:  # the template died before the line above took effect
            os._exit(1)
        limit = _cap_address_space(memory_bytes)
        replies = sock.makefile("wb")
        requests = sock.makefile("rb")
        _send(replies, _encode({"ready": True, "address_space_limit": limit, "network_attempts": guard[0]}))
        while True:
            head = requests.read(_HEAD.size)
            if len(head) < _HEAD.size:
                break  # the caller closed our socket: leave
            header = json.loads(requests.read(_HEAD.unpack(head)[0]))
            try:
                content = requests.read(int(header["size"]))
                body, code = _handle(header, content, guard)
                del content
            except MemoryError:  # the content itself did not fit
                code = "memory_limit"
                body = _encode({"ok": False, "code": code, "message": "file does not fit the memory limit"})
            _send(replies, body)
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
        return _encode({"ok": True, "network_attempts": guard[0],
                        "elements": [[e.kind, e.text, e.depth, e.page] for e in elements]}), None
    except IngestError as exc:
        reply = {"ok": False, "code": exc.code, "message": exc.message}
    except MemoryError:
        reply = {"ok": False, "code": "memory_limit", "message": "parse exceeded the memory limit"}
    except Exception as exc:  # parse() maps library errors; this is a bug of ours
        reply = {"ok": False, "code": "parse_failed", "message": f"{type(exc).__name__}: {exc}"[:500]}
    reply["network_attempts"] = guard[0]
    return _encode(reply), str(reply["code"])


def _encode(reply: dict[str, Any]) -> bytes:
    return json.dumps(reply, ensure_ascii=False).encode("utf-8", errors="replace")


def _send(out: Any, body: bytes) -> None:
    out.write(_LEN.pack(len(body)))
    out.write(body)
    out.flush()


def _harden() -> list[int]:
    """Process-wide restrictions, set before anything heavy is imported; returns the counter of
    refused network calls (a one-item list the guard increments)."""
    import resource
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
    socket.getaddrinfo = refuse  # type: ignore[assignment]
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash must not dump document contents
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


def _die_with_parent() -> None:
    """Linux: SIGKILL this worker when the template exits (the template leaves when the caller
    closes its socket or dies), so no worker outlives the caller."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _cap_address_space(extra: int) -> int | None:
    """RLIMIT_AS = current size + ``extra``, soft and hard (a parse cannot raise it back).
    Returns the limit, or None where the platform has no such limit (the timeout still holds)."""
    try:
        import resource

        with open("/proc/self/statm") as f:
            current = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        limit = current + extra
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        return limit
    except (OSError, ValueError, ImportError):
        return None
