"""The directory store and group expansion (``store.directory``, ``auth.directory``,
``auth.principals``), on SQLite and on the PostgreSQL at 127.0.0.1:5432.

Invariants:
- nested groups are expanded transitively, cycles end, the depth cap holds, deleting a group or
  a user deletes every edge naming it, and every change bumps the directory version;
- ``find_user`` matches userName and email without regard to case, externalId exactly, and an
  email two users share matches nobody;
- expansion per issuer: ``off`` is exactly the old behaviour (an overage is a 401), ``merge`` adds
  the caller's directory groups and the ancestors of token groups, an overage is answered by the
  directory, an unknown or inactive caller gets no directory group, an unverified email matches
  nobody;
- the cache is bounded (LRU size) and a change is seen within ``version_check_s``, however long
  the TTL, and never undone by a lookup that raced the change.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from auth.directory import DirectoryExpander
from auth.group_map import GroupMap
from auth.principals import ClaimsResolver
from auth.validator import ValidatedToken
from core.errors import AuthenticationError, NotFoundError
from core.settings import DirectorySettings, InvalidSettingsError, IssuerSettings, load_settings
from store.catalog import Catalog
from store.directory import DirectoryConflict, DirectoryStore, GroupData, UnknownMemberError, UserData
from tests.contract.test_catalog import PG, _pg_available

ISS = "https://idp.example"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DirectoryStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/catalog.sqlite3"
        cat = Catalog(url)
        yield DirectoryStore(cat)
        cat.close()
        return
    if not _pg_available():
        pytest.fail("PostgreSQL at 127.0.0.1:5432 is required")
    schema = f"d_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG)
    with admin.begin() as c:
        c.execute(text(f"create schema {schema}"))
    cat = Catalog(f"{PG}?options=-csearch_path%3D{schema}")
    try:
        yield DirectoryStore(cat)
    finally:
        cat.close()
        with admin.begin() as c:
            c.execute(text(f"drop schema {schema} cascade"))
        admin.dispose()


def user(store: DirectoryStore, name: str, **kw: object) -> str:
    return store.create_user(UserData(user_name=name, **kw)).id  # type: ignore[arg-type]


def group(store: DirectoryStore, name: str, *members: str) -> str:
    return store.create_group(GroupData(display_name=name, members=members)).id


def set_members(store: DirectoryStore, gid: str, *members: str) -> None:
    g = store.get_group(gid)
    assert g is not None
    store.replace_group(gid, GroupData(display_name=g.display_name, external_id=g.external_id, members=members))


# -- store -------------------------------------------------------------------------------------


def test_nested_groups_expand_transitively_and_only_upwards(store: DirectoryStore) -> None:
    alice, bob = user(store, "alice"), user(store, "bob")
    platform = group(store, "platform", alice)
    engineering = group(store, "engineering", platform)
    group(store, "company", engineering, bob)
    group(store, "unrelated", bob)
    assert store.groups_of(alice) == {"platform", "engineering", "company"}
    assert store.groups_of(alice, transitive=False) == {"platform"}
    assert store.groups_of(bob) == {"company", "unrelated"}
    assert store.ancestors_of({"platform"}) == {"engineering", "company"}
    assert store.ancestors_of({"company", "nope"}) == set()
    assert store.groups_of(platform) == {"engineering", "company"}


def test_cycles_end_and_the_depth_cap_holds(store: DirectoryStore) -> None:
    alice = user(store, "alice")
    a = group(store, "a", alice)
    b = group(store, "b", a)
    c = group(store, "c", b)
    set_members(store, a, alice, c)  # a -> b -> c -> a
    assert store.groups_of(alice) == {"a", "b", "c"}
    assert store.ancestors_of({"a"}) == {"b", "c"}
    chain = [group(store, "g0", alice)]
    for i in range(1, 15):
        chain.append(group(store, f"g{i}", chain[-1]))
    assert store.groups_of(alice, max_depth=3) == {"a", "b", "c", "g0", "g1", "g2"}
    assert {f"g{i}" for i in range(15)} <= store.groups_of(alice, max_depth=20)


def test_deletes_remove_every_edge_and_every_change_bumps_the_version(store: DirectoryStore) -> None:
    v0 = store.version()
    alice = user(store, "alice")
    platform = group(store, "platform", alice)
    engineering = group(store, "engineering", platform)
    assert store.version() == v0 + 3
    store.delete_group(platform)
    assert store.groups_of(alice) == set()
    g = store.get_group(engineering)
    assert g is not None and g.members == ()
    set_members(store, engineering, alice)
    store.delete_user(alice)
    g = store.get_group(engineering)
    assert g is not None and g.members == ()
    assert store.version() == v0 + 6
    with pytest.raises(NotFoundError):
        store.delete_user(alice)


def test_uniqueness_members_and_preconditions(store: DirectoryStore) -> None:
    alice = user(store, "Alice")
    with pytest.raises(DirectoryConflict):
        user(store, "ALICE")
    group(store, "eng", alice)
    with pytest.raises(DirectoryConflict):
        group(store, "eng")
    with pytest.raises(UnknownMemberError):
        group(store, "ghosts", str(uuid.uuid4()))
    u = store.get_user(alice)
    assert u is not None
    store.replace_user(alice, UserData(user_name="alice"), expected_version=u.version)
    with pytest.raises(DirectoryConflict):
        store.replace_user(alice, UserData(user_name="alice2"), expected_version=u.version)
    assert store.count_users() == 1 and store.count_groups() == 1


def test_find_user_by_each_attribute(store: DirectoryStore) -> None:
    alice = user(store, "Alice@Corp.example", external_id="oid-1", emails=("Alice@Corp.example", "a@home.example"))
    user(store, "bob", emails=("shared@corp.example",))
    user(store, "carol", emails=("SHARED@corp.example",))
    assert (found := store.find_user("userName", "alice@corp.EXAMPLE")) is not None and found.id == alice
    assert (found := store.find_user("externalId", "oid-1")) is not None and found.id == alice
    assert store.find_user("externalId", "OID-1") is None
    assert (found := store.find_user("email", "A@HOME.example")) is not None and found.id == alice
    assert store.find_user("email", "shared@corp.example") is None  # ambiguous: nobody
    assert store.find_user("userName", "") is None


# -- expansion ---------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def issuer(**kw: object) -> IssuerSettings:
    return IssuerSettings(issuer=ISS, **kw)  # type: ignore[arg-type]


def token(cfg: IssuerSettings, sub: str, groups: list[str] | None = None, **claims: object) -> ValidatedToken:
    return ValidatedToken(issuer=cfg, header={}, claims={"iss": ISS, "sub": sub, "groups": groups or [], **claims})


def resolver(store: DirectoryStore, clock: Clock | None = None, **settings: object) -> tuple[ClaimsResolver, DirectoryExpander]:
    settings.setdefault("issuers", [ISS])
    exp = DirectoryExpander(store, DirectorySettings(**settings), clock=clock or Clock())  # type: ignore[arg-type]
    return ClaimsResolver(GroupMap(), exp), exp


def groups_of(ent_principals: frozenset[str]) -> set[str]:
    return {p.removeprefix("group:") for p in ent_principals if p.startswith("group:")}


@pytest.fixture
def org(store: DirectoryStore) -> dict[str, str]:
    ids = {"alice": user(store, "alice", emails=("alice@corp.example",)), "eve": user(store, "eve", active=False)}
    ids["platform"] = group(store, "platform", ids["alice"], ids["eve"])
    ids["engineering"] = group(store, "engineering", ids["platform"])
    ids["sre"] = group(store, "sre")
    ids["ops"] = group(store, "ops", ids["sre"])
    return ids


def test_merge_adds_directory_groups_and_ancestors_of_token_groups(store: DirectoryStore, org: dict[str, str]) -> None:
    res, _ = resolver(store)
    cfg = issuer(directory="merge")
    ent = res.resolve(token(cfg, "alice", ["sre", "not-in-directory"]))
    assert groups_of(ent.principals) == {"platform", "engineering", "sre", "ops", "not-in-directory"}
    # off: exactly the token's groups, the directory is not consulted
    ent = res.resolve(token(issuer(), "alice", ["sre"]))
    assert groups_of(ent.principals) == {"sre"}


def test_overage_is_answered_by_the_directory_only_when_the_issuer_merges(store: DirectoryStore, org: dict[str, str]) -> None:
    res, _ = resolver(store)
    many = [f"g{i}" for i in range(600)]
    ent = res.resolve(token(issuer(directory="merge"), "alice", many))
    assert groups_of(ent.principals) == {"platform", "engineering"}  # the token's 600 are not used
    ent = res.resolve(token(issuer(directory="merge"), "alice", [], hasgroups=True))
    assert groups_of(ent.principals) == {"platform", "engineering"}
    with pytest.raises(AuthenticationError):
        res.resolve(token(issuer(), "alice", many))  # off: the old 401
    # unknown to the directory with an overage: no group at all (sees less)
    ent = res.resolve(token(issuer(directory="merge"), "mallory", many))
    assert groups_of(ent.principals) == set()
    assert "user:mallory" in ent.principals


def test_unknown_and_inactive_callers_get_token_groups_only(store: DirectoryStore, org: dict[str, str]) -> None:
    res, _ = resolver(store)
    cfg = issuer(directory="merge")
    assert groups_of(res.resolve(token(cfg, "mallory", ["x"])).principals) == {"x"}
    assert groups_of(res.resolve(token(cfg, "eve", ["x"])).principals) == {"x"}


def test_email_match_needs_a_verified_email(store: DirectoryStore, org: dict[str, str]) -> None:
    res, _ = resolver(store)
    cfg = issuer(directory="merge", directory_match="email", directory_claim="email")
    assert groups_of(res.resolve(token(cfg, "s-1", email="Alice@corp.example", email_verified=True)).principals) == {
        "platform", "engineering"}
    assert groups_of(res.resolve(token(cfg, "s-1", email="alice@corp.example")).principals) == set()
    loose = issuer(directory="merge", directory_match="email", directory_claim="email", require_email_verified=False)
    assert groups_of(res.resolve(token(loose, "s-1", email="alice@corp.example")).principals) == {"platform", "engineering"}


def test_a_revocation_is_seen_within_the_version_check_interval(store: DirectoryStore, org: dict[str, str]) -> None:
    clock = Clock()
    res, exp = resolver(store, clock, cache_ttl_s=3600, version_check_s=0.5)
    cfg = issuer(directory="merge")
    assert "engineering" in groups_of(res.resolve(token(cfg, "alice")).principals)
    set_members(store, org["platform"], org["eve"])  # alice leaves platform
    clock.t += 0.1
    assert "engineering" in groups_of(res.resolve(token(cfg, "alice")).principals)  # cached, within the interval
    clock.t += 0.5
    assert groups_of(res.resolve(token(cfg, "alice")).principals) == set()
    assert exp.cache_entries() == 1


def test_the_cache_is_bounded_in_size_and_age(store: DirectoryStore, org: dict[str, str]) -> None:
    clock = Clock()
    res, exp = resolver(store, clock, cache_size=3, cache_ttl_s=1, version_check_s=5)
    cfg = issuer(directory="merge")
    for i in range(10):
        res.resolve(token(cfg, f"user{i}"))
    assert exp.cache_entries() == 3
    assert "platform" in groups_of(res.resolve(token(cfg, "alice")).principals)
    set_members(store, org["platform"])
    clock.t += 2  # past the TTL, before the next version read: the age bound alone expires it
    assert groups_of(res.resolve(token(cfg, "alice")).principals) == set()


def test_a_lookup_racing_a_change_is_not_kept(store: DirectoryStore, org: dict[str, str]) -> None:
    """An expansion computed under version v is only served while the version is v."""
    clock = Clock()
    res, exp = resolver(store, clock, cache_ttl_s=3600)
    cfg = issuer(directory="merge")
    real_groups_of = store.groups_of

    def groups_then_change(user_id: str, transitive: bool = True, max_depth: int = 10) -> set[str]:
        out = real_groups_of(user_id, transitive, max_depth)
        set_members(store, org["platform"])  # commits after the read: the result is stale
        return out

    store.groups_of = groups_then_change  # type: ignore[method-assign]
    assert "platform" in groups_of(res.resolve(token(cfg, "alice")).principals)
    store.groups_of = real_groups_of  # type: ignore[method-assign]
    clock.t += 0.6
    assert groups_of(res.resolve(token(cfg, "alice")).principals) == set()


OTHER = "https://other-idp.example"


def test_a_foreign_issuers_subject_never_gets_a_directory_users_groups(store: DirectoryStore, org: dict[str, str]) -> None:
    """The directory holds the users of ``directory.issuers`` only: issuer B's subject "alice" is
    not issuer A's alice, even when B is (wrongly) set to merge."""
    r, _ = resolver(store)
    home, foreign = issuer(directory="merge"), IssuerSettings(issuer=OTHER, directory="merge")
    assert {"platform", "engineering"} <= groups_of(r.resolve(token(home, "alice")).principals)
    stranger = ValidatedToken(issuer=foreign, header={}, claims={"iss": OTHER, "sub": "alice", "groups": []})
    assert groups_of(r.resolve(stranger).principals) == set()


def test_merge_on_an_issuer_the_directory_does_not_hold_is_refused_at_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLEARANCE_AUTH__MODE", "oidc")
    monkeypatch.setenv("CLEARANCE_AUTH__ISSUERS", json.dumps([{"issuer": ISS, "directory": "merge"},
                                                               {"issuer": OTHER, "directory": "merge"}]))
    monkeypatch.setenv("CLEARANCE_DIRECTORY__ISSUERS", json.dumps([ISS]))
    with pytest.raises(InvalidSettingsError, match="directory.issuers") as refused:
        load_settings()
    assert OTHER in str(refused.value) and ISS + "'" not in str(refused.value).split("set directory")[0]
    monkeypatch.setenv("CLEARANCE_AUTH__ISSUERS", json.dumps([{"issuer": ISS, "directory": "merge"},
                                                               {"issuer": OTHER, "directory": "off"}]))
    assert load_settings().directory.issuers == [ISS]
