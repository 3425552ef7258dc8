"""The identity map (``app.identity``): explicit entries over rules, templates checked against the
principal grammar, directory rules through a real directory (SQLite catalog), and the
fail-closed ACL rules (unmapped allow grants nothing; unmapped deny makes the document private).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from app.identity import IdentityMap, MapStats
from core.errors import ConfigError
from core.settings import IdentityEntry, IdentityRule, IdentitySettings
from core.types import Acl
from ingest.connectors.contract import SourceAcl, SourceIdentity
from store.catalog import Catalog
from store.directory import DirectoryStore, UserData


def u(name: str, ns: str = "posix") -> SourceIdentity:
    return SourceIdentity("user", name, ns)


def g(name: str, ns: str = "posix") -> SourceIdentity:
    return SourceIdentity("group", name, ns)


RULES = IdentitySettings(
    rules=[IdentityRule(namespace="posix", kind="user", principal="user:{name}@corp.example", match="[a-z][a-z0-9_]*"),
           IdentityRule(namespace="posix", kind="group", principal="group:{name}"),
           IdentityRule(namespace="imap", kind="user", principal="user:{name}")],
    entries=[IdentityEntry(namespace="posix", kind="user", name="root", principals=["group:admins"]),
             IdentityEntry(namespace="posix", kind="group", name="wheel", principals=["group:admins", "role:ops"])])


def test_rules_and_entries() -> None:
    m = IdentityMap(RULES)
    assert m.principals(u("alice")) == {"user:alice@corp.example"}
    assert m.principals(u("root")) == {"group:admins"}, "an explicit entry wins over the rule"
    assert m.principals(g("wheel")) == {"group:admins", "role:ops"}
    assert m.principals(g("eng")) == {"group:eng"}
    assert m.principals(u("Bad Name")) == frozenset(), "the rule's match refuses it: unmapped"
    assert m.principals(u("alice", "sql")) == frozenset(), "no rule for the namespace: unmapped"
    assert m.principals(u("bob@corp.example", "imap")) == {"user:bob@corp.example"}


def test_a_template_yielding_a_bad_principal_maps_nothing() -> None:
    m = IdentityMap(IdentitySettings(rules=[IdentityRule(namespace="sql", kind="group", principal="group:{name}")]))
    assert m.principals(g("a:b", "sql")) == frozenset(), "'group:a:b' breaks the grammar"
    assert m.principals(g(" padded", "sql")) == frozenset()
    assert m.principals(g("x*", "sql")) == frozenset(), "no wildcards"


def test_passthrough_namespace_checks_the_grammar() -> None:
    m = IdentityMap(IdentitySettings())
    assert m.principals(SourceIdentity("user", "user:alice", "clearance")) == {"user:alice"}
    assert m.principals(SourceIdentity("group", "Group:x", "clearance")) == frozenset()


@pytest.mark.parametrize("rule", [
    IdentityRule(namespace="posix", kind="user", principal="user:{uid}"),  # unknown field
    IdentityRule(namespace="posix", kind="user", principal="{name}"),  # no principal kind
    IdentityRule(namespace="posix", kind="user", principal="user:{name}", match="("),  # bad regex
])
def test_bad_rules_are_refused_at_startup(rule: IdentityRule) -> None:
    with pytest.raises(ConfigError):
        IdentityMap(IdentitySettings(rules=[rule]))


def test_bad_entries_are_refused_at_startup() -> None:
    with pytest.raises(ConfigError):
        IdentityMap(IdentitySettings(entries=[IdentityEntry(namespace="p", kind="user", name="x", principals=["alice"])]))


def test_acl_mapping_fails_closed() -> None:
    m = IdentityMap(RULES)
    stats = MapStats()
    ok = m.acl(SourceAcl(frozenset({u("alice"), g("eng"), g("???", "nowhere")}), frozenset({u("mallory")})), stats, "d1")
    assert ok.acl == Acl(frozenset({"user:alice@corp.example", "group:eng"}), frozenset({"user:mallory@corp.example"}))
    assert ok.unmapped == {g("???", "nowhere")} and not ok.made_private
    bad = m.acl(SourceAcl(frozenset({u("alice")}), frozenset({u("Not Mapped")})), stats, "d2")
    assert bad.acl == Acl.private(), "an unmapped deny makes the document private"
    assert bad.private_because == (u("Not Mapped"),)
    assert stats.private_docs == ["d2"]
    assert stats.unmapped == {("nowhere", "group", "???"): 1, ("posix", "user", "Not Mapped"): 1}
    assert ("posix", "user", "alice") in stats.mapped
    nobody = m.acl(SourceAcl(frozenset({u("Nobody Known")})))
    assert nobody.acl == Acl.private(), "only unmapped readers: nobody may read it"


def test_directory_rules_look_users_up(tmp_path: Path) -> None:
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        d = DirectoryStore(catalog)
        d.create_user(UserData(user_name="alice@corp.example", external_id="E100", emails=("Alice.Smith@corp.example",)))
        d.create_user(UserData(user_name="bob@corp.example", emails=("shared@corp.example",)))
        d.create_user(UserData(user_name="carol@corp.example", emails=("shared@corp.example",)))
        settings = IdentitySettings(rules=[
            IdentityRule(namespace="imap", kind="user", principal="user:{userName}", directory_attribute="email"),
            IdentityRule(namespace="sql", kind="user", principal="user:{userName}", directory_attribute="externalId"),
        ])
        m = IdentityMap(settings, d)
        assert m.principals(u("alice.smith@corp.example", "imap")) == {"user:alice@corp.example"}
        assert m.principals(u("E100", "sql")) == {"user:alice@corp.example"}
        assert m.principals(u("nobody@corp.example", "imap")) == frozenset(), "no such user: unmapped"
        assert m.principals(u("shared@corp.example", "imap")) == frozenset(), "ambiguous: unmapped"
        assert IdentityMap(settings, None).principals(u("E100", "sql")) == frozenset(), "no directory: unmapped"
    finally:
        catalog.close()


def test_foreign_namespaces_and_passthrough_are_refused_and_the_fingerprint_follows_the_directory() -> None:
    from app.identity import IdentityMap as Map
    from core.settings import IdentityRule as Rule
    from core.settings import IdentitySettings as IdSettings
    from ingest.connectors.contract import SourceAcl as Acl_
    from ingest.connectors.contract import SourceIdentity as Ident

    class Directory:
        v = 1

        def find_user(self, attribute: object, value: str) -> object:
            return None

        def version(self) -> int:
            return self.v

    d = Directory()
    m = Map(IdSettings(rules=[Rule(namespace="sql", kind="user", principal="user:{name}"),
                              Rule(namespace="ldap", kind="user", principal="user:{userName}", directory_attribute="userName")]), d)
    forged = Acl_(frozenset({Ident("user", "role:admin", "clearance"), Ident("user", "bob", "sql")}), frozenset())
    assert m.acl(forged, namespace="sql", passthrough=False).acl.allow == {"user:bob"}
    assert m.acl(forged, namespace="other", passthrough=True).acl.allow == frozenset()
    assert m.acl(forged).acl.allow == {"user:bob", "role:admin"}, "unrestricted: the folder connector's view"
    deny = Acl_(frozenset({Ident("user", "bob", "sql")}), frozenset({Ident("user", "x", "posix")}))
    assert m.acl(deny, namespace="sql").made_private, "a foreign deny is unmapped: private"
    before = m.fingerprint()
    d.v = 2
    assert m.fingerprint() != before, "a directory change re-maps when a rule reads the directory"
    plain = Map(IdSettings(rules=[Rule(namespace="sql", kind="user", principal="user:{name}")]), d)
    fp = plain.fingerprint()
    d.v = 3
    assert plain.fingerprint() == fp
    assert Map(IdSettings(rules=[Rule(namespace="sql", kind="user", principal="group:{name}")])).fingerprint() != fp
