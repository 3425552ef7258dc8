"""IMAP mailbox connector: each message is one ``.eml`` document, readable by the mailbox's owner
and by whoever the folder is shared with (RFC 4314 ACLs, e.g. Dovecot's ``acl`` plugin).

Reads only. Every folder is opened with EXAMINE (read-only) and bodies are fetched with
``BODY.PEEK[]``, so no ``\\Seen`` flag is ever set. A message's size (``RFC822.SIZE``) is checked
before its body is fetched, and the client refuses any literal over ``max_message_bytes`` (plus
64 KiB) before reading it, so a server that lies about the size cannot make us hold more. Every socket operation has a
timeout. The password comes from an environment variable named in the config (``password_env``)
and is never logged or kept in the config.

Identities (namespace ``imap`` unless configured), from the folder's ACL (GETACL):
- the owner of the folder's mailbox (``owner_identity`` for the connector's own mailbox, the
  user's name for another user's shared folder) is allowed, unless the ACL names the owner
  without the ``r`` right or with a negative ``r`` right;
- an entry with the ``r`` right allows its identifier: ``$name`` (Dovecot's group syntax, also
  ``!$name``) is the group ``name``, any other name a user; a negative entry (``-name``) with
  ``r`` denies it;
- ``anyone``/``authenticated`` grant nobody unless ``anyone_group`` names a group to stand for
  them (stated policy, fail closed); a negative ``r`` for them makes the folder private;
- without the admin right GETACL is refused (a folder shared *with* us): then only the owner and,
  if MYRIGHTS says we may read, ourselves are allowed. Fewer readers than the truth, never more.

Doc ids: ``<folder>/<UIDVALIDITY>/<UID>`` (prefixed ``~<user>/`` when a master user reads several
mailboxes). Checkpoints (JSON): ``documents`` keeps UIDVALIDITY and the highest UID read per folder
(a changed UIDVALIDITY re-reads that folder in full; the old ids drop out of ``listing()``);
``permissions`` keeps a fingerprint of each folder's ACL and yields a ``PermissionChange`` for
every message of a folder whose fingerprint changed, without fetching a body. IMAP messages are
immutable (RFC 3501): a changed message is a new UID, so a content change is a new doc id and
the old one leaves the listing.
"""

from __future__ import annotations

import fnmatch
import hashlib
import imaplib
import ipaddress
import json
import logging
import re
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from typing import Any, Literal
from urllib.parse import quote as urlquote

from core.errors import BackendUnavailableError, ConfigError
from ingest.connectors.contract import Batch, ConnectorDocument, PermissionChange, SourceAcl, SourceIdentity
from ingest.connectors.imap_protocol import (
    Token,
    as_text,
    compact_set,
    decode_mutf7,
    expand_sequence_set,
    group_responses,
    pairs,
    parse_internaldate,
    quote,
    tokens,
)
from ingest.connectors.secrets import check_secret_name, read_secret

log = logging.getLogger(__name__)

TlsMode = Literal["ssl", "starttls", "none"]
CHECKPOINT_VERSION = 1
_MAX_UIDS = 5_000_000  # one folder's UID list; beyond this the server is not telling the truth
_FETCH_CHUNK = 500  # UIDs per metadata FETCH
_HEADER_MAX = 1_000  # characters kept of a metadata header


# -- config ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImapConfig:
    """The connector's settings, checked when the connector is made (``ConfigError`` naming the key)."""

    host: str
    port: int
    tls: TlsMode
    username: str | None
    password_env: str | None
    master_user: str | None
    users: tuple[str, ...]
    owner_identity: str | None
    folders: tuple[str, ...]
    exclude_folders: tuple[str, ...]
    namespace: str
    anyone_group: str | None
    ca_file: str | None
    max_message_bytes: int
    timeout_s: float
    batch_size: int

    @classmethod
    def parse(cls, config: Mapping[str, object]) -> ImapConfig:
        known = {"host", "port", "tls", "username", "password_env", "master_user", "users", "owner_identity",
                 "folders", "exclude_folders", "namespace", "anyone_group", "ca_file", "max_message_bytes",
                 "timeout_s", "batch_size"}
        if "password" in config:
            raise ConfigError("imap connector: a password never goes in the config; name an environment variable "
                              "in password_env", code="connector_config")
        unknown = sorted(set(config) - known)
        if unknown:
            raise ConfigError(f"imap connector: unknown config keys {unknown} (known: {sorted(known)})", code="connector_config")
        host = _str(config, "host", required=True)
        assert host is not None
        tls = _str(config, "tls") or "ssl"
        if tls not in ("ssl", "starttls", "none"):
            raise ConfigError(f"imap connector: tls must be ssl, starttls or none, not {tls!r}", code="connector_config")
        if tls == "none" and not _is_loopback(host):
            raise ConfigError(f"imap connector: tls 'none' is allowed only for a loopback host, not {host!r} "
                              "(credentials and mail would cross the network in clear)", code="connector_config")
        port = _int(config, "port", 993 if tls == "ssl" else 143, 1, 65535)
        username = _str(config, "username")
        master_user = _str(config, "master_user")
        users = _strs(config, "users")
        if master_user and username:
            raise ConfigError("imap connector: give either username (one mailbox) or master_user with users, not both",
                              code="connector_config")
        if not master_user and not username:
            raise ConfigError("imap connector: username (or master_user with users) is required", code="connector_config")
        if master_user and not users:
            raise ConfigError("imap connector: master_user needs users: the mailboxes to read", code="connector_config")
        if username and users:
            raise ConfigError("imap connector: users is for master_user mode only", code="connector_config")
        password_env = _str(config, "password_env", required=True)
        try:
            check_secret_name(password_env or "")
        except ConfigError as exc:
            raise ConfigError(f"imap connector: {exc.message}", code="connector_config") from None
        owner = _str(config, "owner_identity")
        if master_user and owner and "{user}" not in owner:
            raise ConfigError("imap connector: with master_user, owner_identity must contain {user}", code="connector_config")
        namespace = _str(config, "namespace") or "imap"
        folders = _strs(config, "folders") or ("*",)
        return cls(
            host=host, port=port, tls=tls,  # type: ignore[arg-type]
            username=username, password_env=password_env, master_user=master_user, users=users,
            owner_identity=owner, folders=folders, exclude_folders=_strs(config, "exclude_folders"),
            namespace=namespace, anyone_group=_str(config, "anyone_group"), ca_file=_str(config, "ca_file"),
            max_message_bytes=_int(config, "max_message_bytes", 25 * 1024 * 1024, 1024, 1 << 31),
            timeout_s=float(_int(config, "timeout_s", 30, 1, 3600)),
            batch_size=_int(config, "batch_size", 50, 1, 10_000),
        )


def _str(config: Mapping[str, object], key: str, *, required: bool = False) -> str | None:
    value = config.get(key)
    if value is None or value == "":
        if required:
            raise ConfigError(f"imap connector: {key} is required", code="connector_config")
        return None
    if not isinstance(value, str):
        raise ConfigError(f"imap connector: {key} must be a string", code="connector_config")
    return value


def _strs(config: Mapping[str, object], key: str) -> tuple[str, ...]:
    value = config.get(key)
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"imap connector: {key} must be a list of non-empty strings", code="connector_config")
    return tuple(value)


def _int(config: Mapping[str, object], key: str, default: int, lo: int, hi: int) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ConfigError(f"imap connector: {key} must be a number in [{lo}, {hi}]", code="connector_config")
    return int(value)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost could resolve anywhere


# -- a bounded imaplib client -------------------------------------------------------------------------

class _Bounded:
    """Refuses any literal over ``max_literal`` bytes before reading it (imaplib would read it whole)."""

    max_literal = 64 * 1024 * 1024

    def read(self, size: int) -> bytes:
        if size > self.max_literal:
            raise imaplib.IMAP4.abort(f"server sent a {size}-byte literal, over the {self.max_literal}-byte bound")
        return super().read(size)  # type: ignore[misc, no-any-return]


class _Imap(_Bounded, imaplib.IMAP4):
    pass


class _ImapSSL(_Bounded, imaplib.IMAP4_SSL):
    pass


@dataclass(frozen=True)
class _Folder:
    name: str  # as the server spells it (modified UTF-7)
    owner: str | None  # login name of the mailbox it belongs to; None for a public folder


class _Session:
    """One logged-in IMAP connection to one mailbox user."""

    def __init__(self, cfg: ImapConfig, user: str) -> None:
        self.cfg = cfg
        self.user = user
        try:
            password = read_secret(cfg.password_env or "", code="connector_secret_missing")
        except ConfigError as exc:
            raise ConfigError(f"imap connector: {exc.message}", code=exc.code) from None
        if not password:
            raise ConfigError(f"imap connector: environment variable {cfg.password_env} is not set", code="connector_secret_missing")
        try:
            self.imap = self._connect()
        except ssl.SSLError as exc:  # an untrusted or broken certificate is not worth retrying
            raise ConfigError(f"imap connector: TLS with {cfg.host}:{cfg.port} failed: {exc}"[:500],
                              code="connector_tls_failed") from exc
        except imaplib.IMAP4.abort as exc:
            raise self._unavailable("connect", exc) from exc
        except imaplib.IMAP4.error as exc:  # e.g. STARTTLS not offered: never fall back to cleartext
            raise ConfigError(f"imap connector: {cfg.host}:{cfg.port}: {exc}"[:500], code="connector_tls_failed") from exc
        except (OSError, EOFError) as exc:
            raise self._unavailable("connect", exc) from exc
        try:
            self.imap.max_literal = cfg.max_message_bytes + 64 * 1024
            if cfg.master_user:  # SASL PLAIN: authorize as the mailbox user, authenticate as the master
                blob = f"{user}\0{cfg.master_user}\0{password}".encode()
                self.imap.authenticate("PLAIN", lambda _challenge: blob)
            else:
                self.imap.login(user, password)
        except imaplib.IMAP4.abort as exc:
            self.imap.shutdown()
            raise self._unavailable("login", exc) from exc
        except imaplib.IMAP4.error as exc:
            self.close()
            # imaplib's message is the server's answer (no credentials in it)
            raise ConfigError(f"imap connector: login as {user!r} on {cfg.host}:{cfg.port} failed: {exc}"[:500],
                              code="connector_login_failed") from exc
        except (OSError, EOFError) as exc:
            self.imap.shutdown()
            raise self._unavailable("login", exc) from exc
        finally:
            del password
        self.capabilities = self._capabilities()
        self.other_users, self.public, self.separator = self._namespaces()

    def _connect(self) -> _Imap | _ImapSSL:
        cfg = self.cfg
        if cfg.tls == "ssl":
            return _ImapSSL(cfg.host, cfg.port, ssl_context=self._ssl_context(), timeout=cfg.timeout_s)
        imap = _Imap(cfg.host, cfg.port, timeout=cfg.timeout_s)
        if cfg.tls == "starttls":
            try:
                imap.starttls(ssl_context=self._ssl_context())
            except BaseException:
                imap.shutdown()
                raise
        return imap

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.cfg.ca_file)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx

    def _unavailable(self, what: str, exc: BaseException) -> BackendUnavailableError:
        return BackendUnavailableError(f"imap {self.cfg.host}:{self.cfg.port} ({self.user}): {what} failed: "
                                       f"{type(exc).__name__}: {exc}"[:500])

    def close(self) -> None:
        try:
            self.imap.logout()  # closes the socket when the server answers
        except Exception:  # noqa: BLE001 - a dead connection: close the socket ourselves
            try:
                self.imap.shutdown()
            except Exception:  # noqa: BLE001
                pass

    # -- commands --------------------------------------------------------------------------------
    def _run(self, what: str, fn: Any, *args: Any) -> tuple[str, list[Any]]:
        try:
            typ, data = fn(*args)
        except imaplib.IMAP4.abort as exc:
            raise self._unavailable(what, exc) from exc
        except imaplib.IMAP4.error as exc:
            return "NO", [str(exc).encode()]
        except (OSError, EOFError) as exc:
            raise self._unavailable(what, exc) from exc
        return str(typ), list(data or [])

    def _must(self, what: str, fn: Any, *args: Any) -> list[Any]:
        typ, data = self._run(what, fn, *args)
        if typ != "OK":
            raise BackendUnavailableError(f"imap {self.cfg.host} ({self.user}): {what} refused: "
                                          f"{_short(data)}")
        return data

    def _capabilities(self) -> set[str]:
        """Asked again after login: servers announce more then (NAMESPACE, ESEARCH, ACL)."""
        data = self._must("CAPABILITY", self.imap.capability)
        words = b" ".join(d for d in data if isinstance(d, bytes)).decode("ascii", "replace").upper().split()
        return set(words) | {c.upper() for c in self.imap.capabilities}

    def _namespaces(self) -> tuple[list[str], list[str], str]:
        """Prefixes of other users' and public namespaces, and the personal separator."""
        if "NAMESPACE" not in self.capabilities:
            return [], [], "/"
        data = self._must("NAMESPACE", self.imap.namespace)
        groups = group_responses(data)
        toks = tokens(groups[0]) if groups else []

        def prefixes(tok: Token) -> list[tuple[str, str]]:
            out = []
            for ns in tok if isinstance(tok, list) else []:
                if isinstance(ns, list) and len(ns) >= 2:
                    out.append((as_text(ns[0]) or "", as_text(ns[1]) or "/"))
            return out

        personal = prefixes(toks[0]) if len(toks) > 0 else []
        other = [p for p, _ in prefixes(toks[1])] if len(toks) > 1 else []
        public = [p for p, _ in prefixes(toks[2])] if len(toks) > 2 else []
        return other, public, personal[0][1] if personal else "/"

    def folders(self) -> list[_Folder]:
        data = self._must("LIST", self.imap.list, '""', "*")
        out = []
        for group in group_responses(data):
            toks = tokens(group)
            if len(toks) < 3 or not isinstance(toks[0], list):
                continue
            flags = {(as_text(f) or "").lower() for f in toks[0]}
            name = as_text(toks[2])
            sep = as_text(toks[1]) or self.separator
            if name is None or "\\noselect" in flags or "\\nonexistent" in flags:
                continue
            if not name.isascii() or any(c in name for c in "\r\n\x00"):
                log.warning("imap.folder_skipped reason=unquotable host=%s", self.cfg.host)
                continue
            out.append(_Folder(name, self._owner(name, sep)))
        return sorted(out, key=lambda f: f.name)

    def _owner(self, name: str, sep: str) -> str | None:
        for prefix in self.other_users:
            if prefix and name.startswith(prefix):
                rest = name[len(prefix):]
                return rest.split(sep, 1)[0] or None
        for prefix in self.public:
            if prefix and name.startswith(prefix):
                return None
        return self.user

    def examine(self, folder: str) -> int:
        """Open read-only; returns UIDVALIDITY."""
        self.imap.untagged_responses.pop("UIDVALIDITY", None)
        self._must(f"EXAMINE {folder}", self.imap.select, quote(folder), True)
        _, data = self.imap.response("UIDVALIDITY")
        try:
            return int(data[0])
        except (TypeError, ValueError, IndexError) as exc:
            raise BackendUnavailableError(f"imap {self.cfg.host}: no UIDVALIDITY for {folder}") from exc

    def status(self, folder: str) -> tuple[int, int] | None:
        """(UIDVALIDITY, UIDNEXT) without opening the folder; None when the server will not say."""
        typ, data = self._run(f"STATUS {folder}", self.imap.status, quote(folder), "(UIDVALIDITY UIDNEXT)")
        if typ != "OK":
            return None
        for group in group_responses(data):
            toks = tokens(group)
            if len(toks) >= 2 and isinstance(toks[-1], list):
                values = {k: as_text(v) for k, v in pairs(toks[-1])}
                try:
                    return int(values["UIDVALIDITY"] or ""), int(values["UIDNEXT"] or "")
                except (KeyError, ValueError):
                    return None
        return None

    def uids_from(self, first: int) -> list[int]:
        """UIDs >= ``first`` of the open folder, ascending (``n:*`` also matches the last message
        when every UID is below ``n``, so the answer is filtered)."""
        criteria = f"{first}:*"
        if "ESEARCH" in self.capabilities:
            self.imap.untagged_responses.pop("ESEARCH", None)
            self._must("UID SEARCH", self.imap.uid, "SEARCH", "RETURN", "(ALL)", "UID", criteria)
            data = self.imap.untagged_responses.pop("ESEARCH", [])
            found: list[int] = []
            for group in group_responses(data):
                toks = tokens(group)
                for i, tok in enumerate(toks[:-1]):
                    if isinstance(tok, str) and tok.upper() == "ALL":
                        found = self._expand(as_text(toks[i + 1]) or "")
            return sorted(u for u in found if u >= first)
        data = self._must("UID SEARCH", self.imap.uid, "SEARCH", "UID", criteria)
        words = b" ".join(d for d in data if isinstance(d, bytes)).split()
        return sorted(u for u in (int(w) for w in words if w.isdigit()) if u >= first)

    def _expand(self, text: str) -> list[int]:
        try:
            return expand_sequence_set(text, _MAX_UIDS)
        except ValueError as exc:
            raise BackendUnavailableError(f"imap {self.cfg.host}: bad UID set: {exc}"[:300]) from exc

    def fetch_meta(self, uids: list[int]) -> dict[int, tuple[int, datetime | None]]:
        """uid -> (RFC822.SIZE, INTERNALDATE) of the open folder."""
        data = self._must("UID FETCH", self.imap.uid, "FETCH", compact_set(uids), "(UID RFC822.SIZE INTERNALDATE)")
        out: dict[int, tuple[int, datetime | None]] = {}
        for group in group_responses(data):
            toks = tokens(group)
            attrs = next((t for t in toks if isinstance(t, list)), None)
            if attrs is None:
                continue
            values = dict(pairs(attrs))
            try:
                uid = int(as_text(values.get("UID")) or "")
                size = int(as_text(values.get("RFC822.SIZE")) or "")
            except ValueError:
                continue
            date = as_text(values.get("INTERNALDATE"))
            out[uid] = (size, parse_internaldate(date) if date else None)
        return out

    def fetch_body(self, uid: int) -> bytes | None:
        """The whole message (``BODY.PEEK[]``: never sets ``\\Seen``); None if it vanished."""
        typ, data = self._run("UID FETCH BODY", self.imap.uid, "FETCH", str(uid), "(BODY.PEEK[])")
        if typ != "OK":
            return None
        for group in group_responses(data):
            toks = tokens(group)
            attrs = next((t for t in toks if isinstance(t, list)), None)
            if attrs is None:
                continue
            values = dict(pairs(attrs))
            if as_text(values.get("UID")) not in (None, str(uid)):
                continue
            body = values.get("BODY[]")
            if isinstance(body, bytes):
                return body
            if isinstance(body, str):
                return body.encode("utf-8", "surrogateescape")
        return None

    def acl_entries(self, folder: str) -> list[tuple[str, str]] | None:
        """GETACL as (identifier, rights) pairs; None when we lack the admin right."""
        typ, data = self._run(f"GETACL {folder}", self.imap.getacl, quote(folder))
        if typ != "OK":
            return None
        entries: list[tuple[str, str]] = []
        for group in group_responses(data):
            toks = tokens(group)[1:]  # the mailbox name first
            for i in range(0, len(toks) - 1, 2):
                ident, rights = as_text(toks[i]), as_text(toks[i + 1])
                if ident is not None and rights is not None:
                    entries.append((ident, rights))
        return entries

    def myrights(self, folder: str) -> str:
        typ, data = self._run(f"MYRIGHTS {folder}", self.imap.myrights, quote(folder))
        if typ != "OK":
            return ""
        for group in group_responses(data):
            toks = tokens(group)
            if len(toks) >= 2:
                return as_text(toks[1]) or ""
        return ""


def _short(data: list[Any]) -> str:
    first = data[0] if data else b""
    text = first.decode("utf-8", "replace") if isinstance(first, bytes) else str(first)
    return text[:200]


# -- the connector ---------------------------------------------------------------------------------

class ImapConnector:
    """Read-only view of one or more IMAP mailboxes (see the module docstring)."""

    def __init__(self, name: str, config: Mapping[str, object]) -> None:
        if not name:
            raise ConfigError("imap connector: a source name is required", code="connector_config")
        self.name = name
        self.config = ImapConfig.parse(config)
        self.namespace = self.config.namespace
        self.skipped: list[tuple[str, str]] = []  # (doc_id, reason) of messages not read
        self._sessions: dict[str, _Session] = {}
        self._acls: dict[tuple[str, str], SourceAcl] = {}

    # -- accounts and folders ----------------------------------------------------------------------
    def _accounts(self) -> list[str]:
        cfg = self.config
        return list(cfg.users) if cfg.master_user else [cfg.username or ""]

    def _session(self, user: str) -> _Session:
        if user not in self._sessions:
            self._sessions[user] = _Session(self.config, user)
        return self._sessions[user]

    def _prefix(self, user: str) -> str:
        return f"~{user}/" if self.config.master_user else ""

    def _selected(self, session: _Session) -> list[_Folder]:
        cfg = self.config
        return [f for f in session.folders()
                if any(fnmatch.fnmatchcase(f.name, p) for p in cfg.folders)
                and not any(fnmatch.fnmatchcase(f.name, p) for p in cfg.exclude_folders)]

    def _walk(self) -> Iterator[tuple[_Session, _Folder, str]]:
        """(session, folder, checkpoint key) for every selected folder of every account."""
        for user in self._accounts():
            session = self._session(user)
            for folder in self._selected(session):
                yield session, folder, self._prefix(user) + folder.name

    # -- identities ---------------------------------------------------------------------------------
    def _user(self, name: str) -> SourceIdentity:
        return SourceIdentity("user", name, self.namespace)

    def _owner_identity(self, login: str) -> SourceIdentity:
        template = self.config.owner_identity
        if template is None:
            return self._user(login)
        if "{user}" in template:
            return self._user(template.replace("{user}", login))
        # a literal owner_identity names the connector's own mailbox owner only
        return self._user(template if login == self.config.username else login)

    def folder_acl(self, session: _Session, folder: _Folder) -> SourceAcl:
        """The folder's read ACL in source identities (see the module docstring for the rules)."""
        key = (session.user, folder.name)
        if key not in self._acls:
            self._acls[key] = self._compute_acl(session, folder)
        return self._acls[key]

    def _compute_acl(self, session: _Session, folder: _Folder) -> SourceAcl:
        owner = folder.owner
        entries = session.acl_entries(folder.name)
        allow: set[SourceIdentity] = set()
        deny: set[SourceIdentity] = set()
        if entries is None:  # shared with us, no admin right: only what we can see for sure
            if owner is not None:
                allow.add(self._owner_identity(owner))
            if "r" in session.myrights(folder.name):
                allow.add(self._owner_identity(session.user) if session.user == owner else self._user(session.user))
            return SourceAcl(frozenset(allow), frozenset())
        private = False
        owner_named, owner_reads = False, False
        for raw_ident, rights in entries:
            negative = raw_ident.startswith("-")
            ident = raw_ident[1:] if negative else raw_ident
            is_owner = owner is not None and ident in (owner, "owner")
            if is_owner and not negative:
                owner_named = True
                owner_reads = owner_reads or "r" in rights
                continue
            if "r" not in rights:
                continue
            identity = self._identity(ident, owner)
            if ident.lower() in ("anyone", "authenticated"):
                if negative:
                    private = True
                elif identity is None:
                    log.warning("imap.anyone_ignored source=%s folder=%s identifier=%s policy=fail_closed",
                                self.name, folder.name, ident)
                if identity is None:
                    continue
            if identity is None:
                log.warning("imap.acl_identifier_ignored source=%s folder=%s identifier=%s", self.name, folder.name, ident)
                continue
            (deny if negative else allow).add(identity)
        if owner is not None and (owner_reads or not owner_named):
            allow.add(self._owner_identity(owner))
        if private:
            allow.clear()
        return SourceAcl(frozenset(allow), frozenset(deny))

    def _identity(self, ident: str, owner: str | None) -> SourceIdentity | None:
        lowered = ident.lower()
        if lowered in ("anyone", "authenticated"):
            group = self.config.anyone_group
            return SourceIdentity("group", group, self.namespace) if group else None
        if lowered == "owner":
            return self._owner_identity(owner) if owner else None
        if ident.startswith("!$") and len(ident) > 2:
            return SourceIdentity("group", ident[2:], self.namespace)
        if ident.startswith("$") and len(ident) > 1:
            return SourceIdentity("group", ident[1:], self.namespace)
        if ident.startswith("#") or not ident:
            return None  # a global/reserved identifier we do not interpret: grants nothing
        if owner is not None and ident == owner:
            return self._owner_identity(owner)
        return self._user(ident)

    # -- streams ------------------------------------------------------------------------------------
    def documents(self, since: str | None) -> Iterator[Batch[ConnectorDocument]]:
        """Messages with a UID above the checkpoint's, per folder; a whole folder when its
        UIDVALIDITY changed or it is new."""
        before = _load(since, "folders")
        done: dict[str, Any] = {}
        batch: list[ConnectorDocument] = []
        size = self.config.batch_size

        def checkpoint() -> str:
            return _dump("folders", {**before, **done})

        for session, folder, key in self._walk():
            prev = before.get(key)
            status = session.status(folder.name)
            if status and isinstance(prev, dict) and prev.get("uv") == status[0] and status[1] <= int(prev.get("uid", 0)) + 1:
                done[key] = prev  # nothing new: no need to open it
                continue
            uv = session.examine(folder.name)
            last = int(prev["uid"]) if isinstance(prev, dict) and prev.get("uv") == uv else 0
            acl = self.folder_acl(session, folder)
            new = [u for u in session.uids_from(last + 1) if u > last]
            for start in range(0, len(new), _FETCH_CHUNK):
                chunk = new[start:start + _FETCH_CHUNK]
                meta = session.fetch_meta(chunk)
                for uid in chunk:
                    doc = self._read(session, folder, key, uv, uid, meta.get(uid), acl)
                    if doc is not None:
                        batch.append(doc)
                    done[key] = {"uv": uv, "uid": uid}
                    if self._sessions.get(session.user) is not session:  # dropped after a lying literal
                        session = self._session(session.user)
                        if session.examine(folder.name) != uv:
                            raise BackendUnavailableError(f"imap {self.config.host}: UIDVALIDITY of a folder changed "
                                                          "during the run; the next run reads it again")
                    if len(batch) >= size:
                        yield Batch(batch, checkpoint())
                        batch = []
            done[key] = {"uv": uv, "uid": max([last, *new])}
        yield Batch(batch, _dump("folders", done))  # folders gone since are dropped here

    def _read(self, session: _Session, folder: _Folder, key: str, uv: int, uid: int,
              meta: tuple[int, datetime | None] | None, acl: SourceAcl) -> ConnectorDocument | None:
        doc_id = f"{key}/{uv}/{uid}"
        if meta is None:
            self._skip(doc_id, "vanished")
            return None
        size, internaldate = meta
        if size > self.config.max_message_bytes:
            self._skip(doc_id, f"too_large: {size} bytes > max_message_bytes {self.config.max_message_bytes}")
            return None
        try:
            content = session.fetch_body(uid)
        except BackendUnavailableError as exc:
            if "literal" not in exc.message:
                raise
            # Skipped for good (reported in ``skipped``) and the run goes on with a new session:
            # re-raising made every later run fail at this same UID, reading nothing after it.
            self._skip(doc_id, "too_large: the server sent more than it announced")
            session.close()  # the stream is unusable after an aborted literal
            self._sessions.pop(session.user, None)
            return None
        if content is None:
            self._skip(doc_id, "vanished")
            return None
        headers = BytesHeaderParser(policy=default_policy).parsebytes(content)
        meta_out = {k: _header(headers, k) for k in ("from", "to", "date")}
        meta_out = {k: v for k, v in meta_out.items() if v}
        meta_out["folder"] = decode_mutf7(folder.name)
        return ConnectorDocument(
            doc_id=doc_id,
            filename=f"message-{uid}.eml",
            content=content,
            acl=acl,
            modified_at=internaldate or datetime.now(UTC),
            uri=self._uri(folder.name, uv, uid, session.user),
            title=_header(headers, "subject"),
            metadata=meta_out,
        )

    def _skip(self, doc_id: str, reason: str) -> None:
        self.skipped.append((doc_id, reason))
        log.warning("imap.message_skipped source=%s doc_id=%s reason=%s", self.name, doc_id, reason)

    def _uri(self, folder: str, uv: int, uid: int, user: str) -> str:
        cfg = self.config
        default_port = 993 if cfg.tls == "ssl" else 143
        hostport = cfg.host if cfg.port == default_port else f"{cfg.host}:{cfg.port}"
        userinfo = f"{urlquote(user, safe='')}@" if cfg.master_user else ""
        path = urlquote(decode_mutf7(folder), safe="/")
        return f"imap://{userinfo}{hostport}/{path};UIDVALIDITY={uv}/;UID={uid}"

    def permissions(self, since: str | None) -> Iterator[Batch[PermissionChange]]:
        """For each folder whose ACL fingerprint differs from the checkpoint's (or that the
        checkpoint lacks), the new ACL of every message in it. Bodies are never fetched."""
        before = _load(since, "acl")
        done: dict[str, Any] = {}
        batch: list[PermissionChange] = []

        def checkpoint() -> str:
            return _dump("acl", {**before, **done})

        for session, folder, key in self._walk():
            acl = self.folder_acl(session, folder)
            fingerprint = _fingerprint(acl)
            if before.get(key) == fingerprint:
                done[key] = fingerprint
                continue
            uv = session.examine(folder.name)
            for uid in session.uids_from(1):
                batch.append(PermissionChange(f"{key}/{uv}/{uid}", acl))
                if len(batch) >= self.config.batch_size:
                    yield Batch(batch, checkpoint())
                    batch = []
            done[key] = fingerprint
        yield Batch(batch, _dump("acl", done))

    def listing(self) -> list[str]:
        """Every message id now present in the selected folders (UID SEARCH ALL each)."""
        ids: list[str] = []
        for session, folder, key in self._walk():
            uv = session.examine(folder.name)
            ids.extend(f"{key}/{uv}/{uid}" for uid in session.uids_from(1))
        return ids

    def close(self) -> None:
        sessions, self._sessions = self._sessions, {}
        for session in sessions.values():
            session.close()
        self._acls.clear()


# -- checkpoints and small helpers -----------------------------------------------------------------

def _load(since: str | None, stream: str) -> dict[str, Any]:
    if since is None:
        return {}
    try:
        data = json.loads(since)
    except ValueError as exc:
        raise ConfigError(f"imap connector: unreadable {stream} checkpoint", code="connector_checkpoint") from exc
    if not isinstance(data, dict) or data.get("v") != CHECKPOINT_VERSION or not isinstance(data.get(stream), dict):
        raise ConfigError(f"imap connector: not an imap {stream} checkpoint (version {CHECKPOINT_VERSION})",
                          code="connector_checkpoint")
    return dict(data[stream])


def _dump(stream: str, state: Mapping[str, Any]) -> str:
    return json.dumps({"v": CHECKPOINT_VERSION, stream: dict(sorted(state.items()))}, separators=(",", ":"))


def _fingerprint(acl: SourceAcl) -> str:
    def names(ids: frozenset[SourceIdentity]) -> list[str]:
        return sorted(f"{i.kind}:{i.namespace}:{i.name}" for i in ids)

    canonical = json.dumps({"allow": names(acl.allow), "deny": names(acl.deny)}, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _header(headers: Any, name: str) -> str:
    try:
        value = headers.get(name)
    except Exception:  # noqa: BLE001 - a malformed header is metadata we do without
        return ""
    text = _CONTROL.sub(" ", str(value or "")).strip()
    return text[:_HEADER_MAX]
