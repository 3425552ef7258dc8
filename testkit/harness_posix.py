"""A real POSIX share for the connector contract suite and integration tests: a folder on the
local file system, real users and groups (``useradd``/``groupadd``, removed afterwards), and the
real tools that change permissions (``chmod``, ``chown``, ``setfacl``). Needs root.

``PosixHarness`` files are owned by root with mode 0600 (root itself reads them; nobody else
through the mode bits) and its readers are granted with named ACL entries (``setfacl -m
u:NAME:r``); ``set_readers`` removes the extended entries (``setfacl -b``) and grants the new ones,
which changes the file's ctime and never its mtime or bytes.
"""

from __future__ import annotations

import os
import pickle
import pwd
import resource
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from ingest.connectors.contract import Connector, SourceIdentity
from ingest.connectors.posix import PosixConnector


def sh(*argv: str, timeout_s: float = 20) -> None:
    """Run one admin tool; retried while another process holds /etc/passwd's lock."""
    for attempt in range(20):
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
        if proc.returncode == 0:
            return
        if "lock" in proc.stderr.lower() and attempt < 19:
            time.sleep(0.1 + 0.05 * attempt)
            continue
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {proc.stderr.strip()}")


def unique_name(prefix: str) -> str:
    """A short account name unlikely to exist (POSIX names: lowercase, <= 32 chars)."""
    return f"{prefix}{secrets.token_hex(3)}"


@contextmanager
def accounts(users: Sequence[str] = (), groups: Sequence[str] = ()) -> Iterator[None]:
    """Create users (no home, no login, no group of their own) and groups; remove them after."""
    made_users: list[str] = []
    made_groups: list[str] = []
    try:
        for g in groups:
            sh("groupadd", g)
            made_groups.append(g)
        for u in users:
            sh("useradd", "-M", "-N", "-s", "/usr/sbin/nologin", u)
            made_users.append(u)
        yield
    finally:
        for u in made_users:
            sh("userdel", u)
        for g in made_groups:
            sh("groupdel", g)


T = TypeVar("T")


def in_child(fn: Callable[[], T], *, user: str | None = None, max_fds: int | None = None) -> T:
    """``fn()`` run in a forked child of this (root) process, as ``user`` when given (all groups
    dropped: the kernel then checks every open against that account, as for a non-root service
    account) and with at most ``max_fds`` more descriptors than it holds now when given (a real
    ``EMFILE``). Its result comes back pickled; an exception comes back as ``ChildError(repr)``."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 0
        try:
            os.close(r)
            try:
                if max_fds is not None:
                    used = len(os.listdir("/proc/self/fd"))
                    resource.setrlimit(resource.RLIMIT_NOFILE, (used + max_fds, used + max_fds))
                if user is not None:
                    pw = pwd.getpwnam(user)
                    os.setgroups([])
                    os.setgid(pw.pw_gid)
                    os.setuid(pw.pw_uid)
                out: tuple[str, object] = ("ok", fn())
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                out = ("error", f"{type(exc).__name__}: {exc}")
            data = pickle.dumps(out)
            with os.fdopen(w, "wb") as fh:
                fh.write(data)
        except BaseException:  # noqa: BLE001
            status = 1
        finally:
            os._exit(status)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        data = fh.read()
    _, status = os.waitpid(pid, 0)
    if status != 0 or not data:
        raise RuntimeError(f"the child process failed (status {status})")
    kind, value = pickle.loads(data)  # noqa: S301 - our own child's output
    if kind == "error":
        raise ChildError(str(value))
    return value  # type: ignore[no-any-return]


class ChildError(Exception):
    """An exception raised by ``fn`` in :func:`in_child` (its type name and message)."""


def acl_spec(readers: Sequence[SourceIdentity]) -> str:
    return ",".join(f"{'u' if r.kind == 'user' else 'g'}:{r.name}:r" for r in readers)


class PosixHarness:
    """The contract harness over a folder (``root``) read by ``PosixConnector``."""

    def __init__(self, root: Path, *, namespace: str = "posix", config: dict[str, object] | None = None) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        self.namespace = namespace
        self.config: dict[str, object] = {"root": str(root), "namespace": namespace, **(config or {})}

    def connector(self) -> Connector:
        return PosixConnector("share", self.config)

    def add(self, hint: str, text: str, readers: list[SourceIdentity]) -> str:
        rel = f"{hint}.txt"
        path = self.root / rel
        path.write_text(text + "\n")
        os.chown(path, 0, 0)
        os.chmod(path, 0o600)
        if readers:
            sh("setfacl", "-m", acl_spec(readers), str(path))
        return rel

    def edit(self, doc_id: str, text: str) -> None:
        path = self.root / doc_id
        with open(path, "r+") as fh:  # rewrite in place: same inode, permissions untouched
            fh.truncate(0)
            fh.write(text + "\n")

    def set_readers(self, doc_id: str, readers: list[SourceIdentity]) -> None:
        path = self.root / doc_id
        sh("setfacl", "-b", str(path))
        os.chmod(path, 0o600)
        if readers:
            sh("setfacl", "-m", acl_spec(readers), str(path))

    def remove(self, doc_id: str) -> None:
        (self.root / doc_id).unlink()

    def close(self) -> None:
        return None
