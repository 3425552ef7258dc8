"""The identity map: a source's identities (``SourceIdentity``: a POSIX user, a database role, a
mail address) to Clearance principals, and a connector's ``SourceAcl`` to an ``Acl``.

Invariant: the map never widens access.

- An identity maps to principals only through configuration (``identity.entries``, then the first
  matching ``identity.rules``) or, in the ``clearance`` namespace (the folder connector's
  ``acl.toml``), to the principal it already is. Every principal produced is checked against
  the one grammar (``core.types.principal_problem``); one that breaks it maps to nothing.
- An unmapped identity grants nothing and is *reported* (``MappedAcl.unmapped``; the engine
  records it per source in the catalog and the source status shows it): never silently dropped.
- An unmapped identity in a *deny* makes the whole document private (``Acl.private``): dropping
  a deny would let through someone the source meant to keep out.
- A directory rule (``directory_attribute``) looks the name up in the directory
  (``store.directory.DirectoryStore.find_user``): no user, an ambiguous one, or no directory at
  all: unmapped.
"""

from __future__ import annotations

import hashlib
import re
import string
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from core.errors import ConfigError
from core.settings import IdentityRule, IdentitySettings
from core.types import Acl, principal_problem
from ingest.connectors.contract import SourceAcl, SourceIdentity

PASSTHROUGH_NAMESPACE = "clearance"  # identities that already are principals (acl.toml)
_FIELDS = ("name", "userName", "externalId", "email", "id")


class UserLookup(Protocol):
    """The part of the directory the map reads (``store.directory.DirectoryStore``)."""

    def find_user(self, attribute: Any, value: str) -> Any: ...


IdentityKey = tuple[str, str, str]  # (namespace, kind, name)


def key_of(i: SourceIdentity) -> IdentityKey:
    return (i.namespace, i.kind, i.name)


@dataclass(frozen=True)
class MappedAcl:
    acl: Acl
    unmapped: frozenset[SourceIdentity] = frozenset()
    private_because: tuple[SourceIdentity, ...] = ()  # unmapped denies that made it private

    @property
    def made_private(self) -> bool:
        return bool(self.private_because)


@dataclass
class MapStats:
    """What one run saw: unmapped identities with counts, and the ones that mapped."""

    unmapped: Counter[IdentityKey] = field(default_factory=Counter)
    mapped: set[IdentityKey] = field(default_factory=set)
    private_docs: list[str] = field(default_factory=list)


def _check_template(rule: IdentityRule) -> None:
    names = {f for _, f, _, _ in string.Formatter().parse(rule.principal) if f is not None}
    allowed = {"name"} if rule.directory_attribute is None else set(_FIELDS)
    bad = names - allowed
    if bad:
        raise ConfigError(f"identity rule for {rule.namespace}/{rule.kind}: template {rule.principal!r} uses "
                          f"{', '.join(sorted(bad))}; allowed: {', '.join(sorted(allowed))}", code="invalid_identity_rule")
    if not rule.principal.startswith(("user:", "group:", "role:", "tenant:")):
        raise ConfigError(f"identity rule for {rule.namespace}/{rule.kind}: template {rule.principal!r} must start "
                          "with a principal kind (user:, group:, role:, tenant:)", code="invalid_identity_rule")


class IdentityMap:
    """Maps identities with the configured entries and rules; thread-safe (no mutable state)."""

    def __init__(self, settings: IdentitySettings, directory: UserLookup | None = None) -> None:
        self._entries: dict[IdentityKey, frozenset[str]] = {}
        for e in settings.entries:
            problems = [p for p in (principal_problem(x) for x in e.principals) if p]
            if problems:
                raise ConfigError(f"identity entry {e.namespace}/{e.kind}/{e.name}: " + "; ".join(problems),
                                  code="invalid_identity_entry")
            self._entries[(e.namespace, e.kind, e.name)] = frozenset(e.principals)
        self._rules: list[tuple[IdentityRule, re.Pattern[str] | None]] = []
        for rule in settings.rules:
            _check_template(rule)
            try:
                pattern = re.compile(rule.match) if rule.match else None
            except re.error as exc:
                raise ConfigError(f"identity rule for {rule.namespace}/{rule.kind}: bad match pattern: {exc}",
                                  code="invalid_identity_rule") from exc
            self._rules.append((rule, pattern))
        self._directory = directory
        self._settings_hash = hashlib.sha256(settings.model_dump_json().encode()).hexdigest()
        self._uses_directory = any(r.directory_attribute is not None for r in settings.rules)

    def fingerprint(self) -> str:
        """What the mapping depends on: the identity settings, and the directory's version when a
        rule looks users up in it. The engine keeps it with the permission checkpoint: when it
        changes, every document's ACL is mapped again (source fingerprints hash source
        identities, not the principals they map to)."""
        version = ""
        if self._uses_directory and self._directory is not None:
            get = getattr(self._directory, "version", None)
            version = str(get()) if callable(get) else ""
        return hashlib.sha256(f"{self._settings_hash}\0{version}".encode()).hexdigest()[:32]

    def principals(self, identity: SourceIdentity, *, namespace: str | None = None,
                   passthrough: bool = True) -> frozenset[str]:
        """The principals ``identity`` is, empty when it is unmapped. ``namespace``: the only
        namespace the connector may speak for (an identity in another is refused: unmapped);
        ``passthrough``: whether ``clearance`` identities are principals as they are (only the
        folder connector, whose ``acl.toml`` names principals, may)."""
        if namespace is not None and identity.namespace != namespace:
            return frozenset()
        explicit = self._entries.get(key_of(identity))
        if explicit is not None:
            return explicit
        if identity.namespace == PASSTHROUGH_NAMESPACE and passthrough:
            return frozenset({identity.name}) if principal_problem(identity.name) is None else frozenset()
        for rule, pattern in self._rules:
            if rule.namespace != identity.namespace or rule.kind != identity.kind:
                continue
            if pattern is not None and not pattern.fullmatch(identity.name):
                continue
            principal = self._apply(rule, identity.name)
            if principal is not None:
                return frozenset({principal})
        return frozenset()

    def _apply(self, rule: IdentityRule, name: str) -> str | None:
        values: dict[str, str] = {"name": name}
        if rule.directory_attribute is not None:
            user = self._find(rule.directory_attribute, name)
            if user is None:
                return None
            emails = tuple(getattr(user, "emails", ()) or ())
            values.update(userName=str(getattr(user, "user_name", "") or ""), id=str(getattr(user, "id", "") or ""),
                          externalId=str(getattr(user, "external_id", "") or ""), email=emails[0] if emails else "")
        try:
            principal = rule.principal.format_map(values)
        except (KeyError, ValueError, IndexError):
            return None
        return principal if principal_problem(principal) is None else None

    def _find(self, attribute: str, value: str) -> Any:
        if self._directory is None:
            return None
        return self._directory.find_user(attribute, value)

    # -- ACLs -------------------------------------------------------------------------------------
    def acl(self, source_acl: SourceAcl, stats: MapStats | None = None, doc: str = "", *,
            namespace: str | None = None, passthrough: bool = True) -> MappedAcl:
        """The ``Acl`` of a ``SourceAcl``: allow and deny mapped; an unmapped deny makes it private.
        ``namespace`` / ``passthrough``: see ``principals`` (the engine passes the connector's)."""
        allow: set[str] = set()
        deny: set[str] = set()
        unmapped: set[SourceIdentity] = set()
        bad_denies: list[SourceIdentity] = []
        cache: dict[SourceIdentity, frozenset[str]] = {}
        for ident, into, is_deny in [*((i, allow, False) for i in source_acl.allow),
                                     *((i, deny, True) for i in source_acl.deny)]:
            got = cache.get(ident)
            if got is None:
                got = cache[ident] = self.principals(ident, namespace=namespace, passthrough=passthrough)
            if got:
                into.update(got)
                if stats is not None:
                    stats.mapped.add(key_of(ident))
            else:
                unmapped.add(ident)
                if stats is not None:
                    stats.unmapped[key_of(ident)] += 1
                if is_deny:
                    bad_denies.append(ident)
        if bad_denies:
            if stats is not None and doc:
                stats.private_docs.append(doc)
            return MappedAcl(Acl.private(), frozenset(unmapped), tuple(sorted(bad_denies, key=key_of)))
        return MappedAcl(Acl(frozenset(allow), frozenset(deny)), frozenset(unmapped))
