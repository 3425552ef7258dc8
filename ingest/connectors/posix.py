"""A POSIX file share as a connector: files under one root, readers from owner, group, mode bits
and POSIX ACL entries, and the search permission of every directory on the way down.

Invariants:

- **The root is never left.** The tree is walked like ``os.fwalk(follow_symlinks=False)``, by
  descriptors (each folder opened ``O_DIRECTORY | O_NOFOLLOW`` beneath its parent's): every
  directory is held open and every file is opened *relative to its directory's descriptor* with
  ``O_NOFOLLOW | O_NONBLOCK``, then checked on the descriptor (regular file, same inode as the
  listing saw). Symbolic links are never followed (files or folders, inside the root or not:
  a link has no permissions of its own, the file it points to is read where it lives, if it is
  under the root); FIFOs, sockets and devices are never opened. Files over ``max_file_bytes``
  are refused unread. Each refusal is kept in ``skipped`` with a code.
- **Nothing is wider than the file system says; unknown means narrower.** ACLs come from the
  ``system.posix_acl_access`` extended attribute, parsed here (a fixed binary layout, bounded by
  the kernel's 64 KiB xattr limit; no subprocess), or from the mode bits where a file has none.
  If the attribute cannot be read for another reason the file is private (empty allow).

How a file's readers are computed (``r`` for the file, ``x`` for each directory):

1. Owner with the bit -> allow that user. Named ``user:`` entries and the owning/named ``group:``
   entries with the bit *after the mask* -> allow them (a named entry for the owner is ignored:
   the owner entry decides, as in the kernel).
2. ``other`` with ``r`` grants nothing by default (fail closed, never "everyone"): set
   ``world_readable`` (e.g. ``"group:everyone"``, an identity of this namespace that the identity
   map turns into a principal such as ``tenant:acme``) to state who "anyone with an account" is.
3. Denies keep the kernel's first-match rule where a broader grant exists: a user entry without
   the bit is denied when some group (or the world) is allowed, since the kernel stops at the
   user entry; when the world is allowed, a group entry without the bit is denied too (its members
   do not fall through to ``other``). The kernel would still let in a member whose *other* group
   entry grants the bit; a deny refuses such a member too: narrower, never wider.
4. Path traversal: for every directory from the root down to the file's parent, an identity keeps
   its access only if that directory lets it search (it is allowed ``x`` there, or ``other`` has
   ``x`` and it is not denied ``x``). Denies of ``x`` are carried down as denies. So a file under
   alice's ``0700`` folder is readable by alice only, whatever its own bits say; a world-readable
   file is readable by everyone who may reach it (each directory's ``x`` grantees). Directories
   above the root (the mount point) are not examined: the share starts at ``root``.

Identities are named by ``pwd``/``grp`` **of the Clearance host** (its own user database, NSS):
uid 1001 is whoever uid 1001 is *here*. On an NFS/SMB mount whose server numbers accounts
differently that name is wrong, so set ``numeric_ids: true``: every identity is then ``uid:N`` /
``gid:N`` and the identity map (``identity.entries``/rules) says who each number is. An unknown
id becomes ``uid:1234`` / ``gid:1234`` either way (the identity map then reports it unmapped; it
grants nothing, and as a deny it makes the file private).

What the service account itself cannot read (it runs as an ordinary user in any sane deployment):

- **A file it can no longer open** (``chmod 600`` by its owner, ``chmod go-r`` on a file with an
  ACL, an ACL it cannot read) becomes **private**: ``permissions()`` yields it with an empty ACL
  (its old readers are revoked at once) and it stays in ``listing()``; its content is not read.
- **A folder it may not open or list** (``EACCES``/``EPERM``) is an access change, not an
  outage: everything under it becomes private. It is left out of ``listing()`` (the engine removes
  its documents, through the mass-delete guard) and ``permissions()`` yields every file the
  checkpoint knew under it with an empty ACL, as it does for every file no longer seen.
- **Any other error reading a folder** (``EIO``, ``ESTALE`` of a flaky mount, ``EMFILE``...) fails
  the whole run with ``BackendUnavailableError`` naming the folder (retried later): a partial
  listing must never reach the engine's reconciliation, which would delete the folder's documents.
  A folder that vanished during the walk (``ENOENT``) is gone: left out.
- The root itself follows the same rules (unreadable by permission: every file private).

Checkpoints (opaque to the engine; zlib-compressed JSON, one entry per file, ~40 bytes each):

- content: ``{path: [mtime_ns, size, inode, sha256/16, racy]}``. A file whose stat triple is
  unchanged is not read. Clock granularity: a file written within ``racy_window_s`` of the scan
  could be rewritten again in the same timestamp tick with the same size, so such an entry is
  marked *racy* and its bytes are re-hashed on the next run (git's "racily clean" rule); a
  re-hash that matches yields nothing. A file touched with the same bytes is not yielded. A file
  moved in with an old mtime is seen (a new path or inode differs from the stored entry).
- permissions: ``{path: ACL fingerprint}``. Each permission run recomputes every file's effective
  ACL (an ``open`` without reading, ``fstat`` and ``getxattr`` per file; directories once) and yields the files whose
  ACL differs from the stored one, with their whole ACL and never their content. This catches
  what ctime alone would miss: a ``chmod 700`` of a parent folder changes no file's ctime.

Config: ``root`` (required), ``namespace`` (``posix``), ``max_file_bytes`` (50 MiB; the engine
may cap it further to its settings), ``numeric_ids`` (false), ``include`` /
``exclude`` (lists of ``fnmatch`` globs on the path relative to the root; ``*`` crosses ``/``),
``world_readable`` (``"group:NAME"``/``"user:NAME"`` or unset), ``batch_docs`` (64),
``racy_window_s`` (2). Only files with an extension ``ingest.parse`` reads are listed; hidden
entries (``.x``) are ignored.
"""

from __future__ import annotations

import base64
import errno
import fnmatch
import grp
import hashlib
import json
import os
import pwd
import stat
import struct
import time
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from core.errors import BackendUnavailableError, ConfigError, IngestError
from core.logging import Log
from ingest.connectors.contract import Batch, ConnectorDocument, IdentityKind, PermissionChange, SourceAcl, SourceIdentity
from ingest.parse import SUPPORTED

log = Log("clearance.connectors.posix")

ACL_XATTR = "system.posix_acl_access"
_ACL_VERSION = 2
_USER_OBJ, _USER, _GROUP_OBJ, _GROUP, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
R, X = 4, 1
_KEYS = {"root", "namespace", "max_file_bytes", "include", "exclude", "world_readable", "batch_docs", "racy_window_s",
         "numeric_ids"}
DEFAULT_MAX_FILE_BYTES = 50 * 1024 * 1024
_DENIED = (errno.EACCES, errno.EPERM)  # a folder the service account may not open: an access change
_CHECKPOINT_PREFIX = "posix1:"


@dataclass(frozen=True)
class PosixPerms:
    """The permission-relevant part of one inode: owner, group and its ACL entries (perm = rwx bits)."""

    uid: int
    gid: int
    user_obj: int
    group_obj: int
    other: int
    mask: int | None = None
    users: tuple[tuple[int, int], ...] = ()
    groups: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class Grants:
    """Who holds one permission bit on one inode: allowed, denied, and whether ``other`` holds it."""

    allow: frozenset[SourceIdentity]
    deny: frozenset[SourceIdentity]
    world: bool


def parse_acl_xattr(raw: bytes, st: os.stat_result) -> PosixPerms:
    """The kernel's ``posix_acl_xattr`` layout: a u32 version (2), then (u16 tag, u16 perm, u32 id)
    entries, little-endian. Raises ``ValueError`` on anything else (the caller fails closed)."""
    if len(raw) < 4 or (len(raw) - 4) % 8:
        raise ValueError("malformed POSIX ACL attribute")
    (version,) = struct.unpack_from("<I", raw, 0)
    if version != _ACL_VERSION:
        raise ValueError(f"unknown POSIX ACL version {version}")
    mode = st.st_mode
    user_obj, group_obj, other = (mode >> 6) & 7, (mode >> 3) & 7, mode & 7
    mask: int | None = None
    users: list[tuple[int, int]] = []
    groups: list[tuple[int, int]] = []
    for tag, perm, ident in struct.iter_unpack("<HHI", raw[4:]):
        perm &= 7
        if tag == _USER_OBJ:
            user_obj = perm
        elif tag == _USER:
            users.append((ident, perm))
        elif tag == _GROUP_OBJ:
            group_obj = perm
        elif tag == _GROUP:
            groups.append((ident, perm))
        elif tag == _MASK:
            mask = perm
        elif tag == _OTHER:
            other = perm
        else:
            raise ValueError(f"unknown POSIX ACL tag {tag:#x}")
    return PosixPerms(st.st_uid, st.st_gid, user_obj, group_obj, other, mask, tuple(users), tuple(groups))


def read_perms(target: int, st: os.stat_result) -> PosixPerms | None:
    """Owner, group and ACL of an open descriptor; ``None`` when the ACL exists but cannot be read
    (the caller makes the file private). No ACL (or a file system without them): the mode bits."""
    try:
        raw = os.getxattr(target, ACL_XATTR)
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            m = st.st_mode
            return PosixPerms(st.st_uid, st.st_gid, (m >> 6) & 7, (m >> 3) & 7, m & 7)
        return None
    try:
        return parse_acl_xattr(raw, st)
    except ValueError:
        return None


class _Names:
    """uid/gid -> identity, cached for one connector (``uid:N`` / ``gid:N`` when unknown)."""

    def __init__(self, namespace: str, numeric: bool = False) -> None:
        self.namespace = namespace
        self.numeric = numeric
        self._users: dict[int, SourceIdentity] = {}
        self._groups: dict[int, SourceIdentity] = {}

    def user(self, uid: int) -> SourceIdentity:
        if uid not in self._users:
            try:
                name = f"uid:{uid}" if self.numeric else pwd.getpwuid(uid).pw_name
            except KeyError:
                name = f"uid:{uid}"
            self._users[uid] = SourceIdentity("user", name, self.namespace)
        return self._users[uid]

    def group(self, gid: int) -> SourceIdentity:
        if gid not in self._groups:
            try:
                name = f"gid:{gid}" if self.numeric else grp.getgrgid(gid).gr_name
            except KeyError:
                name = f"gid:{gid}"
            self._groups[gid] = SourceIdentity("group", name, self.namespace)
        return self._groups[gid]


def grants(perms: PosixPerms, bit: int, names: _Names, world_counts: bool) -> Grants:
    """Who holds ``bit`` (rules 1 and 3 of the module docstring). ``world_counts``: whether
    ``other`` holding it grants anything (always for a directory's search bit, only with
    ``world_readable`` for a file's read bit), which decides which denies matter."""

    def masked(p: int) -> int:
        return p & perms.mask if perms.mask is not None else p

    user_entries = [(perms.uid, perms.user_obj)] + [(u, masked(p)) for u, p in perms.users if u != perms.uid]
    group_entries = [(perms.gid, masked(perms.group_obj))] + [(g, masked(p)) for g, p in perms.groups]
    allow: set[SourceIdentity] = set()
    deny: set[SourceIdentity] = set()
    world = bool(perms.other & bit) and world_counts
    for gid, p in group_entries:
        if p & bit:
            allow.add(names.group(gid))
        elif world:
            deny.add(names.group(gid))
    broader = world or bool(allow)  # a group or the world grants it: a user entry without it must deny
    for uid, p in user_entries:
        if p & bit:
            allow.add(names.user(uid))
        elif broader:
            deny.add(names.user(uid))
    return Grants(frozenset(allow - deny), frozenset(deny), world)


def effective_acl(file: Grants, path: tuple[Grants, ...], world: SourceIdentity | None) -> SourceAcl:
    """A file's readers after the search permission of every directory on its path (rule 4)."""
    candidates = set(file.allow)
    if file.world and world is not None:
        candidates.add(world)
        for d in path:  # anyone who may reach it reads a world-readable file
            candidates |= d.allow
    deny = set(file.deny)
    for d in path:
        deny |= d.deny
    kept = set()
    for ident in candidates:
        if ident in deny:
            continue
        if all(ident not in d.deny and (ident in d.allow or d.world) for d in path):
            kept.add(ident)
    return SourceAcl(frozenset(kept), frozenset(deny))


def acl_key(acl: SourceAcl) -> str:
    """A short stable fingerprint of an ACL (what the permission checkpoint stores)."""
    def names(ids: frozenset[SourceIdentity]) -> list[str]:
        return sorted(f"{i.kind}:{i.name}" for i in ids)

    canonical = json.dumps({"a": names(acl.allow), "d": names(acl.deny)}, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def pack(state: Mapping[str, object]) -> str:
    """A checkpoint: compact JSON, zlib-compressed, base64 (per-file state stays small)."""
    raw = json.dumps(state, separators=(",", ":"), sort_keys=True).encode()
    return _CHECKPOINT_PREFIX + base64.b64encode(zlib.compress(raw, 6)).decode()


def unpack(checkpoint: str | None, what: str) -> dict[str, object]:
    if not checkpoint:
        return {}
    if not checkpoint.startswith(_CHECKPOINT_PREFIX):
        raise ConfigError(f"the stored {what} checkpoint is not this connector's", code="bad_checkpoint")
    try:
        data = json.loads(zlib.decompress(base64.b64decode(checkpoint[len(_CHECKPOINT_PREFIX):]), bufsize=1 << 16))
    except (ValueError, zlib.error) as exc:
        raise ConfigError(f"the stored {what} checkpoint is corrupt", code="bad_checkpoint") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"the stored {what} checkpoint is corrupt", code="bad_checkpoint")
    return data


@dataclass(frozen=True)
class _Entry:
    """One regular file found by the walk, with its directory's descriptor still open."""

    rel: str
    name: str
    dirfd: int
    st: os.stat_result
    path: tuple[Grants, ...]


@dataclass(frozen=True)
class Skipped:
    rel: str
    code: str  # symlink | not_regular_file | unreadable | vanished | too_large | acl_unreadable | folder_denied


def _identity_config(value: object, namespace: str) -> SourceIdentity | None:
    if value is None:
        return None
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError("world_readable must be 'group:NAME' or 'user:NAME'", code="invalid_source")
    kind, _, name = value.partition(":")
    if kind not in ("user", "group") or not name:
        raise ConfigError("world_readable must be 'group:NAME' or 'user:NAME'", code="invalid_source")
    k: IdentityKind = "user" if kind == "user" else "group"
    return SourceIdentity(k, name, namespace)


def _globs(value: object, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple) or not all(isinstance(g, str) and g for g in value):
        raise ConfigError(f"{key} must be a list of glob patterns", code="invalid_source")
    return tuple(value)


def _is_dir(entry: os.DirEntry[str]) -> bool:
    """Whether a listed name is a folder (or a link to one, reported as ``symlink`` later). A link
    whose target cannot be examined is not a folder: its error must not count against the folder
    that holds it."""
    try:
        return entry.is_dir()
    except OSError:
        return False


class PosixConnector:
    """A directory tree read with its file-system permissions; doc ids are POSIX paths under the root."""

    def __init__(self, name: str, config: Mapping[str, object]) -> None:
        unknown = set(config) - _KEYS
        if unknown:
            raise ConfigError(f"unknown posix connector config keys: {', '.join(sorted(unknown))}", code="invalid_source")
        root = config.get("root")
        if not isinstance(root, str) or not root:
            raise ConfigError("the posix connector needs config 'root': a folder path", code="invalid_source")
        try:
            self.root = Path(root).resolve(strict=True)
        except OSError as exc:
            raise ConfigError(f"posix root {root!r} does not exist", code="invalid_source") from exc
        if not self.root.is_dir():
            raise ConfigError(f"posix root {root!r} is not a directory", code="invalid_source")
        namespace = config.get("namespace", "posix")
        if not isinstance(namespace, str) or not namespace:
            raise ConfigError("namespace must be a non-empty string", code="invalid_source")
        limit = config.get("max_file_bytes", DEFAULT_MAX_FILE_BYTES)
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ConfigError("max_file_bytes must be a positive integer", code="invalid_source")
        batch = config.get("batch_docs", 64)
        if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
            raise ConfigError("batch_docs must be a positive integer", code="invalid_source")
        racy = config.get("racy_window_s", 2)
        if not isinstance(racy, int | float) or isinstance(racy, bool) or racy < 0:
            raise ConfigError("racy_window_s must be a non-negative number", code="invalid_source")
        self.name = name
        self.namespace = namespace
        self.max_file_bytes: int = limit
        self.batch_docs = batch
        self.racy_window_ns = int(racy * 1e9)
        self.include = _globs(config.get("include"), "include")
        self.exclude = _globs(config.get("exclude"), "exclude")
        self.world_readable = _identity_config(config.get("world_readable"), namespace)
        numeric = config.get("numeric_ids", False)
        if not isinstance(numeric, bool):
            raise ConfigError("numeric_ids must be true or false", code="invalid_source")
        self._names = _Names(namespace, numeric)
        self.skipped: list[Skipped] = []

    # -- the walk -----------------------------------------------------------------------------
    def _wanted(self, rel: str) -> bool:
        if PurePosixPath(rel).suffix.lower() not in SUPPORTED:
            return False
        if self.include and not any(fnmatch.fnmatchcase(rel, g) for g in self.include):
            return False
        return not any(fnmatch.fnmatchcase(rel, g) for g in self.exclude)

    def _dir_grants(self, dirfd: int) -> Grants:
        st = os.fstat(dirfd)
        perms = read_perms(dirfd, st)
        if perms is None:  # unreadable ACL on a folder: nobody passes it
            return Grants(frozenset(), frozenset(), False)
        return grants(perms, X, self._names, world_counts=True)

    def _walk(self) -> Iterator[_Entry]:
        """Every wanted regular file, top-down and sorted, with the search grants of its path.
        Folders are opened beneath their parent's descriptor (never through a link); a folder the
        service account may not open is recorded in ``skipped`` as ``folder_denied`` and left out,
        any other error stops the walk (see the module docstring)."""
        self.skipped = []
        fd = self._opendir(str(self.root), None, ".")
        if fd is None:
            return
        try:
            yield from self._visit(".", fd, ())
        finally:
            os.close(fd)

    def _opendir(self, name: str, dir_fd: int | None, rel: str) -> int | None:
        try:
            return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError as exc:
            self._folder_error(rel, exc)
            return None

    def _folder_error(self, rel: str, exc: OSError) -> None:
        """A folder that cannot be read: denied (private, left out), vanished (left out), replaced
        by a link (skipped), or anything else: the run fails before the engine reconciles."""
        if exc.errno in _DENIED:
            self.skipped.append(Skipped(rel, "folder_denied"))
            log.warning("connector.posix.folder_denied", source=self.name, folder=rel)
            return
        if exc.errno == errno.ENOENT:
            return
        if exc.errno == errno.ELOOP:
            self.skipped.append(Skipped(rel, "symlink"))
            return
        code = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
        raise BackendUnavailableError(f"source {self.name}: cannot read folder {rel!r} under the posix root ({code}); "
                                      "the run stops so that nothing under it is removed") from None

    def _visit(self, rel_dir: str, dirfd: int, parent: tuple[Grants, ...]) -> Iterator[_Entry]:
        try:
            with os.scandir(dirfd) as it:
                entries = sorted(((e.name, _is_dir(e)) for e in it), key=lambda x: x[0])
        except OSError as exc:
            self._folder_error(rel_dir, exc)
            return
        chain = (*parent, self._dir_grants(dirfd))
        dirnames = [n for n, is_dir in entries if is_dir]
        filenames = [n for n, is_dir in entries if not is_dir]
        for f in filenames:
            rel = f if rel_dir == "." else f"{rel_dir}/{f}"
            if f.startswith(".") or not self._wanted(rel):
                continue
            try:
                st = os.stat(f, dir_fd=dirfd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            except OSError:
                self.skipped.append(Skipped(rel, "unreadable"))
                continue
            if stat.S_ISLNK(st.st_mode):
                self.skipped.append(Skipped(rel, "symlink"))
                continue
            if not stat.S_ISREG(st.st_mode):
                self.skipped.append(Skipped(rel, "not_regular_file"))
                continue
            if st.st_size > self.max_file_bytes:
                self.skipped.append(Skipped(rel, "too_large"))
                continue
            yield _Entry(rel, f, dirfd, st, chain)
        for d in dirnames:
            rel = d if rel_dir == "." else f"{rel_dir}/{d}"
            if d.startswith(".") or any(fnmatch.fnmatchcase(rel, g) for g in self.exclude):
                continue
            try:
                dst = os.stat(d, dir_fd=dirfd, follow_symlinks=False)
            except OSError as exc:
                self._folder_error(rel, exc)
                continue
            if stat.S_ISLNK(dst.st_mode):
                self.skipped.append(Skipped(rel, "symlink"))
                continue
            if not stat.S_ISDIR(dst.st_mode):
                continue  # replaced since it was listed: the next run sees what it is now
            sub = self._opendir(d, dirfd, rel)
            if sub is None:
                continue
            try:
                if os.path.samestat(dst, os.fstat(sub)):
                    yield from self._visit(rel, sub, chain)
            finally:
                os.close(sub)

    def _open(self, e: _Entry) -> int:
        """The file's descriptor, opened beneath its directory without following a link or
        blocking on a FIFO, and checked to be the regular file the listing saw."""
        try:
            fd = os.open(e.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=e.dirfd)
        except FileNotFoundError as exc:
            raise IngestError("vanished before it was read", code="vanished") from exc
        except OSError as exc:
            raise IngestError(f"cannot be opened: {type(exc).__name__}", code="unreadable") from exc
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_ino != e.st.st_ino or st.st_dev != e.st.st_dev:
            os.close(fd)
            raise IngestError("replaced while it was read", code="vanished")
        return fd

    def _acl(self, fd: int, st: os.stat_result, path: tuple[Grants, ...]) -> SourceAcl:
        perms = read_perms(fd, st)
        if perms is None:
            return SourceAcl()  # fail closed: an ACL we cannot read grants nothing
        file = grants(perms, R, self._names, world_counts=self.world_readable is not None)
        return effective_acl(file, path, self.world_readable)

    def _read(self, e: _Entry) -> tuple[bytes, os.stat_result, SourceAcl]:
        fd = self._open(e)
        try:
            st = os.fstat(fd)
            limit = self.max_file_bytes
            if st.st_size > limit:
                raise IngestError(f"file exceeds {limit} bytes", code="too_large")
            with os.fdopen(fd, "rb", closefd=False) as fh:
                data = fh.read(limit + 1)
            if len(data) > limit:
                raise IngestError(f"file exceeds {limit} bytes", code="too_large")
            return data, st, self._acl(fd, st, e.path)
        finally:
            os.close(fd)

    def _document(self, e: _Entry, data: bytes, st: os.stat_result, acl: SourceAcl) -> ConnectorDocument:
        owner, group = self._names.user(st.st_uid), self._names.group(st.st_gid)
        return ConnectorDocument(
            doc_id=e.rel,
            filename=PurePosixPath(e.rel).name,
            content=data,
            acl=acl,
            modified_at=datetime.fromtimestamp(st.st_mtime_ns / 1e9, UTC),
            uri=(self.root / e.rel).as_uri(),
            title=PurePosixPath(e.rel).stem.replace("-", " ").replace("_", " "),
            metadata={"owner": owner.name, "group": group.name, "mode": f"{stat.S_IMODE(st.st_mode):04o}"},
        )

    # -- streams ------------------------------------------------------------------------------
    def documents(self, since: str | None) -> Iterator[Batch[ConnectorDocument]]:
        """Files new or changed since the checkpoint (see the module docstring for the rule)."""
        before = unpack(since, "content")
        state: dict[str, object] = dict(before)
        seen: set[str] = set()
        items: list[ConnectorDocument] = []
        started_ns = time.time_ns()
        for e in self._walk():
            seen.add(e.rel)
            stored = before.get(e.rel)
            old = stored if isinstance(stored, list) and len(stored) == 5 else None
            if old is not None and old[:3] == [e.st.st_mtime_ns, e.st.st_size, e.st.st_ino] and not old[4]:
                continue
            try:
                data, st, acl = self._read(e)
            except IngestError as exc:
                self.skipped.append(Skipped(e.rel, exc.code))
                log.warning("connector.posix.skipped", source=self.name, code=exc.code)
                continue
            digest = hashlib.sha256(data).hexdigest()[:16]
            racy = int(st.st_mtime_ns >= started_ns - self.racy_window_ns)
            state[e.rel] = [st.st_mtime_ns, st.st_size, st.st_ino, digest, racy]
            if old is not None and old[3] == digest:
                continue  # touched, or re-hashed after a racy scan: the same bytes
            items.append(self._document(e, data, st, acl))
            if len(items) >= self.batch_docs:
                yield Batch(items, pack(state))
                items = []
        for gone in set(state) - seen:
            del state[gone]
        if items or state != before or since is None:
            yield Batch(items, pack(state))

    def permissions(self, since: str | None) -> Iterator[Batch[PermissionChange]]:
        """Files whose effective ACL differs from the stored fingerprint: a chmod, chown or setfacl
        of the file or of any folder above it. Content is never read. A file the service account
        cannot open, and every file of the checkpoint no longer seen (deleted, or under a folder it
        may no longer open), is yielded once as private: an old ACL never outlives the access."""
        before = unpack(since, "permissions")
        state: dict[str, object] = dict(before)
        seen: set[str] = set()
        items: list[PermissionChange] = []
        for e in self._walk():
            seen.add(e.rel)
            try:
                fd = self._open(e)
            except IngestError as exc:
                self.skipped.append(Skipped(e.rel, exc.code))
                acl = SourceAcl()  # fail closed: what the service account cannot open, nobody reads
            else:
                try:
                    acl = self._acl(fd, os.fstat(fd), e.path)
                finally:
                    os.close(fd)
            key = acl_key(acl)
            if before.get(e.rel) == key:
                continue
            state[e.rel] = key
            items.append(PermissionChange(e.rel, acl))
            if len(items) >= self.batch_docs:
                yield Batch(items, pack(state))
                items = []
        for gone in sorted(set(state) - seen):
            del state[gone]
            items.append(PermissionChange(gone, SourceAcl()))
            if len(items) >= self.batch_docs:
                yield Batch(items, pack(state))
                items = []
        if items or state != before or since is None:
            yield Batch(items, pack(state))

    def listing(self) -> list[str]:
        return [e.rel for e in self._walk()]

    def close(self) -> None:
        return None
