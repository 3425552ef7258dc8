"""Operating-system limits of the parser processes: network isolation, address space, core dumps,
death with the parent. Standard library only, so ``available_isolation`` can run this file on its
own in a short-lived interpreter (``python -I limits.py netns,seccomp``).

Invariants:
- ``isolate_network`` applies the first method that works and says which: ``netns`` (a network
  namespace of its own: only a loopback interface, down, so every connect, datagram and DNS query
  fails in the kernel, from Python or native code alike), ``seccomp`` (a filter that fails
  ``socket()`` for AF_INET, AF_INET6 and AF_PACKET with EACCES, and ``io_uring_setup``, which
  could open sockets around it), or ``none``. Call it while the process is single-threaded:
  both bind the calling thread and everything it forks or starts later;
- a method is reported only after it is verified in force (a new namespace inode; an inet
  socket refused).

Not covered by either: name services reached over Unix sockets (nscd, systemd-resolved's
varlink socket) resolve names outside the namespace. Neither runs on our machines; a deployment
that runs them should not mount their sockets where parsers run.
"""

from __future__ import annotations

import ctypes
import os
import platform
import signal
import socket
import struct
import sys
from collections.abc import Sequence
from typing import Literal

Isolation = Literal["netns", "seccomp", "none"]
METHODS: tuple[str, ...] = ("netns", "seccomp")

_CLONE_NEWNET = 0x40000000
_CLONE_NEWUSER = 0x10000000
_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
# (AUDIT_ARCH, socket, io_uring_setup) syscall numbers; other architectures get no filter.
_ARCH = {"x86_64": (0xC000003E, 41, 425), "aarch64": (0xC00000B7, 198, 425)}
_AF_PACKET = 17


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def isolate_network(methods: Sequence[str] = METHODS) -> Isolation:
    """Cut this process (and everything it starts later) off the network; which way, or ``none``."""
    for method in methods:
        if method == "netns" and _new_network_namespace():
            return "netns"
        if method == "seccomp" and _refuse_inet_sockets():
            return "seccomp"
    return "none"


def _net_inode() -> int | None:
    try:
        return os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return None


def _new_network_namespace() -> bool:
    before = _net_inode()
    if before is None:
        return False
    try:
        libc = _libc()
        if libc.unshare(_CLONE_NEWNET) != 0:
            # Without CAP_SYS_ADMIN: a user namespace of our own grants it, where the kernel
            # allows unprivileged user namespaces. Our ids map to themselves, so files we own
            # stay ours (only possible while single-threaded).
            uid, gid = os.getuid(), os.getgid()
            if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) != 0:
                return False
            for path, text in (("/proc/self/setgroups", "deny"), ("/proc/self/uid_map", f"{uid} {uid} 1"),
                               ("/proc/self/gid_map", f"{gid} {gid} 1")):
                try:
                    with open(path, "w") as f:
                        f.write(text)
                except OSError:
                    pass  # unmapped ids still reach our own files; the namespace holds regardless
    except (OSError, AttributeError):
        return False
    return _net_inode() not in (None, before)


def _refuse_inet_sockets() -> bool:
    arch = _ARCH.get(platform.machine())
    if arch is None or not sys.platform.startswith("linux"):
        return False
    audit_arch, nr_socket, nr_io_uring = arch
    ld, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06
    allow, deny = 0x7FFF0000, 0x00050000 | 13  # SECCOMP_RET_ALLOW; SECCOMP_RET_ERRNO | EACCES
    # seccomp_data: nr at 0, arch at 4, args[0] at 16 (its low word: little-endian on both arches)
    program = [
        (ld, 0, 0, 4),
        (jeq, 1, 0, audit_arch),
        (ret, 0, 0, deny),  # a foreign ABI (i386 through int 0x80): nothing here needs one
        (ld, 0, 0, 0),
        (jge, 7, 0, 0x40000000),  # x32 ABI numbers
        (jeq, 6, 0, nr_io_uring),
        (jeq, 0, 4, nr_socket),
        (ld, 0, 0, 16),
        (jeq, 3, 0, socket.AF_INET),
        (jeq, 2, 0, socket.AF_INET6),
        (jeq, 1, 0, _AF_PACKET),
        (ret, 0, 0, allow),
        (ret, 0, 0, deny),
    ]
    raw = b"".join(struct.pack("HBBI", *ins) for ins in program)
    buf = ctypes.create_string_buffer(raw, len(raw))

    class _Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = _Prog(len(program), ctypes.cast(buf, ctypes.c_void_p))
    try:
        libc = _libc()
        ul = ctypes.c_ulong
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, ul(1), ul(0), ul(0), ul(0)) != 0:
            return False
        if libc.prctl(_PR_SET_SECCOMP, ul(_SECCOMP_MODE_FILTER), ctypes.byref(prog), ul(0), ul(0)) != 0:
            return False
    except (OSError, AttributeError):
        return False
    try:
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close()
    except PermissionError:
        return True
    return False  # pragma: no cover - the filter did not take


def die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent exits, so no worker outlives the template."""
    try:
        _libc().prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def no_core_dumps() -> None:
    """A crash must not write document contents to disk."""
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def cap_address_space(extra: int) -> int | None:
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


if __name__ == "__main__":  # what a parser process would get here: used by ``available_isolation``
    print(isolate_network([m for m in (sys.argv[1] if len(sys.argv) > 1 else ",".join(METHODS)).split(",") if m]))
