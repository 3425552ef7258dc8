"""Group expansion from the identity directory (``store.directory``), per issuer policy.

Policy (``IssuerSettings.directory``; the dev issuer's is ``directory.dev_issuer``):

- ``off``: token groups only; the directory is never read for this issuer's callers.
- ``merge`` (allowed only for an issuer named in ``directory.issuers``, the IdP whose users the
  directory holds; Settings refuse any other at startup): the caller is looked up in the directory by ``directory_match`` (userName,
  externalId or email) with the value of ``directory_claim`` (default: ``user_claim``). The
  caller's groups are the token's groups ∪ the caller's directory groups (nested groups
  expanded), and every token group that names a directory group also brings that group's
  ancestors. On a group overage the token's groups are not used at all and the directory
  answers alone (no 401).
- A caller the directory does not know, or whose user is inactive (``active: false``), gets
  no directory groups: token groups only, and with an overage no group at all (it sees less,
  never more). An email is matched only when the token says it is verified (unless the issuer
  switched ``require_email_verified`` off).

Invariants: expansion only adds groups the directory holds; it never removes a token group
and never adds a user, role or tenant principal. Nested groups are followed breadth-first with
a visited set (cycles end) at most ``directory.max_depth`` levels up. Results are cached per
caller (LRU of ``cache_size`` entries, each at most ``cache_ttl_s`` old) and the whole cache is
dropped when the directory's version changes; the version is read at most every
``version_check_s`` (0.5 s by default), so a SCIM change (a revoked membership, a deactivated
user) takes effect in every process within about that interval. A directory that cannot be
read fails the request (``BackendUnavailableError``, 503), never a request with fewer checks.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from auth.principals import claim, clean_name
from auth.validator import ValidatedToken
from core.logging import Log
from core.settings import DirectorySettings, IssuerSettings
from store.directory import Attribute, DirectoryUser

log = Log("clearance.auth")


class DirectoryReader(Protocol):
    """What expansion reads from the directory (``store.directory.DirectoryStore``)."""

    def version(self) -> int: ...

    def find_user(self, attribute: Attribute, value: str) -> DirectoryUser | None: ...

    def groups_of(self, user_id: str, transitive: bool = True, max_depth: int = ...) -> set[str]: ...

    def ancestors_of(self, display_names: set[str], max_depth: int = ...) -> set[str]: ...


@dataclass(frozen=True)
class DirectoryPolicy:
    match: Attribute
    claim: str  # the claim whose value is matched
    require_verified_email: bool


CacheKey = tuple[str, str, str, frozenset[str]]


class DirectoryExpander:
    """``GroupExpander`` (``auth.principals``) over the directory, with a bounded cache."""

    def __init__(self, reader: DirectoryReader, settings: DirectorySettings, *, dev_issuer: str = "",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.reader = reader
        self.settings = settings
        self.dev_issuer = dev_issuer
        self.clock = clock
        self._lock = threading.Lock()
        self._cache: OrderedDict[CacheKey, tuple[int, float, frozenset[str]]] = OrderedDict()
        self._version: int | None = None
        self._checked_at = float("-inf")

    # -- policy -----------------------------------------------------------------------------
    def policy(self, cfg: IssuerSettings) -> DirectoryPolicy | None:
        """The issuer's expansion policy, or None when it is ``off``."""
        if self.dev_issuer and cfg.issuer == self.dev_issuer:
            if self.settings.dev_issuer == "off":
                return None
            return DirectoryPolicy(self.settings.dev_issuer_match, cfg.user_claim, cfg.require_email_verified)
        if cfg.directory == "off":
            return None
        if cfg.issuer not in self.settings.issuers:
            # Settings refuse this at startup; kept so that no other construction can ever match
            # a foreign issuer's subject against the directory's users.
            log.warning("auth.directory_foreign_issuer", issuer=cfg.issuer)
            return None
        return DirectoryPolicy(cfg.directory_match, cfg.directory_claim or cfg.user_claim, cfg.require_email_verified)

    def enabled_for(self, cfg: IssuerSettings) -> bool:
        return self.policy(cfg) is not None

    # -- GroupDirectory (overage) -------------------------------------------------------------
    def groups_for(self, token: ValidatedToken) -> list[str]:
        """The caller's directory groups (``auth.principals.GroupDirectory``)."""
        return sorted(self.expand(token, frozenset()))

    # -- GroupExpander ------------------------------------------------------------------------
    def expand(self, token: ValidatedToken, token_groups: frozenset[str]) -> frozenset[str]:
        """Directory groups to add for this caller: its own (transitively) and the ancestors of
        the token groups that name directory groups. Empty when the issuer's policy is off."""
        policy = self.policy(token.issuer)
        if policy is None:
            return frozenset()
        value = self._match_value(token, policy)
        key: CacheKey = (token.issuer.issuer, policy.match, value or "", token_groups)
        version = self._current_version()
        now = self.clock()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] == version and now - hit[1] <= self.settings.cache_ttl_s:
                self._cache.move_to_end(key)
                return hit[2]
        groups = self._lookup(policy, value, token_groups)
        if self.settings.cache_size > 0:
            with self._lock:
                # An entry is only good for the version read before its lookup: one computed while
                # a change committed is dropped with the next version check, never kept for its TTL.
                self._cache[key] = (version, now, groups)
                self._cache.move_to_end(key)
                while len(self._cache) > self.settings.cache_size:
                    self._cache.popitem(last=False)
        return groups

    def _lookup(self, policy: DirectoryPolicy, value: str | None, token_groups: frozenset[str]) -> frozenset[str]:
        depth = self.settings.max_depth
        out: set[str] = set()
        if value is not None:
            user = self.reader.find_user(policy.match, value)
            if user is None:
                log.info("auth.directory_unknown", match=policy.match)
            elif user.active:
                out |= self.reader.groups_of(user.id, transitive=True, max_depth=depth)
        if token_groups:
            out |= self.reader.ancestors_of(set(token_groups), max_depth=depth)
        return frozenset(out)

    @staticmethod
    def _match_value(token: ValidatedToken, policy: DirectoryPolicy) -> str | None:
        value = clean_name(claim(token.claims, policy.claim))
        if value is None:
            return None
        if policy.match == "email":
            if "@" not in value or (policy.require_verified_email and token.claims.get("email_verified") is not True):
                return None
        return value

    def _current_version(self) -> int:
        """The directory version, read again when the last read is ``version_check_s`` old; a
        change drops every cached expansion."""
        now = self.clock()
        with self._lock:
            if self._version is not None and now - self._checked_at < self.settings.version_check_s:
                return self._version
        version = self.reader.version()  # outside the lock: a slow read never blocks cache hits
        with self._lock:
            if self._version is not None and version < self._version:
                return self._version  # a slower concurrent read: the counter only grows
            self._checked_at = now
            if version != self._version:
                if self._version is not None:
                    log.info("auth.directory_changed", version=version, dropped=len(self._cache))
                self._cache = OrderedDict((k, v) for k, v in self._cache.items() if v[0] == version)
                self._version = version
            return version

    def cache_entries(self) -> int:
        with self._lock:
            return len(self._cache)

