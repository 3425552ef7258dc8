"""The caller's side of the sandbox: a pool of parser workers forked by a template process.

Invariants:
- the calling process never parses: it checks extension, size and emptiness, then exchanges raw
  bytes and JSON with a worker (``wire``);
- a call returns elements or raises a ``ClearanceError``: ``IngestError`` with a per-file code
  (``ingest.parse.ERROR_CODES``), or ``BackendUnavailableError`` (``parser_unavailable``) when no
  worker can be had, (``parser_unisolated``) when the parser processes could not be cut off the
  network and ``ingest.allow_unisolated_parsing`` is off; it never waits longer than
  ``parse_timeout_s`` for a parse;
- over ``parse_timeout_s`` the worker is killed (``parse_timeout``); a worker that dies mid-parse
  gives ``parse_killed``; in each case, after a ``memory_limit``, and after
  ``parse_worker_max_jobs`` parses, the next call gets a fresh worker.
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
import subprocess
import sys
import tempfile
import threading
import time
from functools import cache
from pathlib import Path
from typing import Any

from core.errors import BackendUnavailableError, IngestError
from core.settings import IngestSettings
from ingest.parse import Element, content_type_for
from ingest.sandbox import wire
from ingest.sandbox.limits import METHODS, Isolation

log = logging.getLogger(__name__)

_ROOT = str(Path(__file__).resolve().parents[2])
_LIMITS_SCRIPT = str(Path(__file__).resolve().parent / "limits.py")
_CONTROL_TIMEOUT_S = 30.0  # a fork or a reap; the template waits at most 5 s for a worker to exit
# -I: no user site, no PYTHON* variables, no current directory on sys.path; the repository root
# is put there explicitly so the template runs this very code.
_BOOT = ("import sys; sys.path.insert(0, sys.argv[1]); from ingest.sandbox.child import template_main; "
         "template_main(int(sys.argv[2]), [m for m in sys.argv[3].split(',') if m])")


class _Timeout(Exception):
    pass


class _Died(Exception):
    pass


@cache
def available_isolation(methods: tuple[str, ...] = METHODS) -> Isolation:
    """The network isolation a parser process gets on this machine (``netns``, ``seccomp`` or
    ``none``), found by applying it in a short-lived interpreter (~30 ms, once per process); for
    readiness and ``config show`` without starting a parser."""
    try:
        out = subprocess.run([sys.executable, "-I", _LIMITS_SCRIPT, ",".join(methods)], capture_output=True,
                             text=True, timeout=30, stdin=subprocess.DEVNULL, check=False)
        result = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "none"
    return result if result in ("netns", "seccomp") else "none"  # type: ignore[return-value]


class _Template:
    """The caller's handle on one template process: forks workers and reaps them."""

    def __init__(self, settings: IngestSettings, methods: tuple[str, ...]) -> None:
        self._start_timeout_s = settings.parse_worker_start_timeout_s
        self._allow_unisolated = settings.allow_unisolated_parsing
        self._methods = methods
        self._lock = threading.Lock()  # one control exchange at a time
        self._proc: subprocess.Popen[bytes] | None = None
        self._ctl: socket.socket | None = None
        self._pending = b""  # control bytes received past the last full line
        self.isolation: Isolation | None = None  # as the running template reported it

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
                [sys.executable, "-I", "-c", _BOOT, _ROOT, str(theirs.fileno()), ",".join(self._methods)],
                stdin=subprocess.DEVNULL, env=_worker_env(), pass_fds=(theirs.fileno(),), close_fds=True,
                start_new_session=True,  # a terminal's Ctrl-C goes to the caller, which cleans up
            )
        finally:
            theirs.close()
        self._ctl = ours
        try:
            ours.settimeout(self._start_timeout_s)
            first, _ = self._receive()
            isolation = str(first.get("isolation", "none"))
            self.isolation = isolation if isolation in ("netns", "seccomp") else "none"  # type: ignore[assignment]
            if self.isolation == "none" and not self._allow_unisolated:
                self._kill()
                raise BackendUnavailableError(
                    "parser processes cannot be cut off the network here (no network namespace, no seccomp); "
                    "set ingest.allow_unisolated_parsing to parse anyway", code="parser_unisolated")
            ready, _ = self._receive()
            if not ready.get("ready"):
                raise OSError(f"template failed to start: {ready}")
        except (OSError, ValueError) as exc:
            self._kill()
            raise BackendUnavailableError(f"parser template did not start: {exc}", code="parser_unavailable") from exc
        log.info("parse.template_started pid=%s isolation=%s", self._proc.pid if self._proc else None, self.isolation)

    def _exchange(self, request: dict[str, Any], fds: int = 0) -> tuple[dict[str, Any], list[int]]:
        assert self._ctl is not None
        self._ctl.settimeout(_CONTROL_TIMEOUT_S)
        self._ctl.sendall(wire.control_line(request))
        return self._receive(fds)

    def _receive(self, fds: int = 0) -> tuple[dict[str, Any], list[int]]:
        """The next control line (two may arrive in one read: the rest waits for the next call)."""
        assert self._ctl is not None
        received: list[int] = []
        while b"\n" not in self._pending:
            data, got, _, _ = socket.recv_fds(self._ctl, 65536, max(fds, 1))
            received.extend(got)
            if not data:
                for fd in received:
                    os.close(fd)
                raise OSError("template closed the control socket")
            self._pending += data
        line, _, self._pending = self._pending.partition(b"\n")
        return json.loads(line), received

    def _kill(self) -> None:
        self._pending = b""
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
        deadline = time.monotonic() + limits.parse_timeout_s
        max_reply = 2 * (limits.max_file_bytes + limits.ooxml_max_uncompressed_bytes) + (1 << 20)
        try:
            try:
                self._write(wire.parse_request(filename, len(content), limits), deadline)
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

    def probe(self, request: dict[str, Any], timeout_s: float) -> dict[str, str]:
        self.start()
        deadline = time.monotonic() + timeout_s
        try:
            self._write(wire.request({"op": "probe", **request}), deadline)
            reply = self._read(deadline, 1 << 20)
        except (_Timeout, _Died) as exc:
            self.kill()
            raise BackendUnavailableError(f"network probe failed: {type(exc).__name__}", code="parser_unavailable") from exc
        return {str(k): str(v) for k, v in reply.items()}

    def _write(self, data: bytes, deadline: float) -> None:
        assert self._sock is not None
        view = memoryview(data)
        with selectors.DefaultSelector() as sel:
            sel.register(self._sock, selectors.EVENT_WRITE)
            while view:
                if not _ready(sel, deadline):
                    continue
                try:
                    view = view[self._sock.send(view[:wire.IO_BLOCK]):]
                except BlockingIOError:
                    continue
                except OSError as exc:  # broken pipe, reset
                    raise _Died("worker closed its input") from exc

    def _read(self, deadline: float, max_body: int) -> dict[str, Any]:
        assert self._sock is not None
        buf = bytearray()
        need = wire.LEN.size
        with selectors.DefaultSelector() as sel:
            sel.register(self._sock, selectors.EVENT_READ)
            while len(buf) < need:
                if not _ready(sel, deadline):
                    continue
                try:
                    chunk = self._sock.recv(min(need - len(buf), wire.IO_BLOCK))
                except BlockingIOError:
                    continue
                except OSError as exc:
                    raise _Died("connection reset") from exc
                if not chunk:
                    raise _Died("end of output")
                buf += chunk
                if need == wire.LEN.size and len(buf) == need:
                    body = wire.LEN.unpack(buf)[0]
                    if body > max_body:
                        raise _Died("reply too large")
                    need += body
        reply = json.loads(bytes(buf[wire.LEN.size:]))
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
    so at most ``parse_workers`` parses run at once and further callers wait their turn.

    ``isolation_methods``: the network isolation to try, in order (tests narrow it to check one)."""

    def __init__(self, settings: IngestSettings, *, isolation_methods: tuple[str, ...] = METHODS) -> None:
        self.settings = settings
        self._methods = tuple(isolation_methods)
        self._template = _Template(settings, self._methods)
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

    def probe_network(self, *, host: str, port: int, udp_port: int, name: str = "example.com",
                      timeout_s: float = 10.0) -> dict[str, str]:
        """Run a fixed network probe in a worker, beneath the Python-level guard: a name lookup
        (``getaddrinfo``, ``gethostbyname`` of ``name``), a TCP connect to ``host:port`` and a
        datagram to ``host:udp_port``. Each outcome is ``ok`` or the error: under isolation
        every one fails. For tests and self-checks; runs no caller-supplied code."""
        worker = self._idle.get()
        try:
            return worker.probe({"host": host, "port": port, "udp_port": udp_port, "name": name,
                                 "timeout_s": min(timeout_s / 4, 2.0)}, timeout_s)
        finally:
            self._idle.put(worker)

    @property
    def isolation(self) -> Isolation:
        """The network isolation of this pool's parser processes: what the running template
        reported, else what one would get here (``available_isolation``)."""
        return self._template.isolation or available_isolation(self._methods)

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

    def __enter__(self) -> ParserPool:
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
           settings.parse_worker_start_timeout_s, settings.allow_unisolated_parsing)
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
