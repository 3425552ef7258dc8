"""SCIM 2.0 at ``/scim/v2`` (``api.routes.scim`` → ``app.directory`` → ``store.directory``).

Invariants:
- without a configured SCIM credential every path is a 404; with one, every request but
  ``/ServiceProviderConfig`` needs exactly that bearer credential (401 otherwise, an OIDC
  access token included);
- Users and Groups: create, get, replace, PATCH (members add / remove / replace, ``active``),
  delete; 409 ``uniqueness``, 404, 400 ``invalidFilter`` / ``invalidValue``, 412 on a stale
  ``If-Match``; filters (eq, co, sw, pr, and, or) on userName, externalId, displayName,
  emails.value and members.value; paging (startIndex, count, totalResults);
- every write is in the write audit with the SCIM actor, and so is every refused write;
- the storage follows scim2-server's storage contract (``ScimStorageContract``) on SQLite and on
  PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from fastapi.testclient import TestClient
from scim2_server.testing import ScimStorageContract
from sqlalchemy import create_engine, text

from api.app import create_app
from app.directory import DirectoryScimStorage, ScimEndpoint, scim_request
from core.settings import DirectorySettings
from store.audit import WriteAudit
from store.catalog import Catalog
from store.directory import DirectoryConflict, DirectoryStore, GroupData, UserData
from tests.conftest import make_settings
from tests.contract.test_catalog import PG, _pg_available

SCIM_TOKEN = "scim-" + "s3cr3t" * 6
AUTH = {"authorization": f"Bearer {SCIM_TOKEN}", "content-type": "application/scim+json"}
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp = tmp_path_factory.mktemp("scim")
    settings = make_settings(tmp, directory=DirectorySettings(scim_token_sha256=hashlib.sha256(SCIM_TOKEN.encode()).hexdigest()))
    with TestClient(create_app(settings)) as c:
        yield c


def new_user(c: TestClient, name: str, **attrs: Any) -> dict[str, Any]:
    r = c.post("/scim/v2/Users", headers=AUTH, json={"schemas": [USER], "userName": name, **attrs})
    assert r.status_code == 201, r.text
    assert r.headers["location"].endswith(f"/scim/v2/Users/{r.json()['id']}")
    return dict(r.json())


def new_group(c: TestClient, name: str, *members: str) -> dict[str, Any]:
    r = c.post("/scim/v2/Groups", headers=AUTH,
               json={"schemas": [GROUP], "displayName": name, "members": [{"value": m} for m in members]})
    assert r.status_code == 201, r.text
    return dict(r.json())


def patch(c: TestClient, path: str, *ops: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    return c.patch(path, headers={**AUTH, **(headers or {})}, json={"schemas": [PATCH], "Operations": list(ops)})


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_scim_is_a_404_until_a_credential_is_configured(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path))) as c:
        for path in ("/scim/v2/Users", "/scim/v2/ServiceProviderConfig", "/scim/v2"):
            assert c.get(path, headers=AUTH).status_code == 404


def test_only_the_scim_credential_is_accepted(client: TestClient) -> None:
    assert client.get("/scim/v2/ServiceProviderConfig").status_code == 200  # RFC 7643 §5: no auth
    dev = client.app.state.services.auth.dev  # type: ignore[attr-defined]
    oidc = dev.mint("admin", scopes=["clearance:admin"])
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": f"Bearer {oidc}"},
                    {"authorization": f"Basic {SCIM_TOKEN}"}, {"authorization": f"Bearer {SCIM_TOKEN}x"}):
        r = client.get("/scim/v2/Users", headers=headers)
        assert r.status_code == 401, headers
        assert r.json()["schemas"] == [ERROR]
        assert r.headers["www-authenticate"].startswith("Bearer")
    r = client.post("/scim/v2/Users", headers={"authorization": "Bearer wrong"}, json={"schemas": [USER], "userName": "x"})
    assert r.status_code == 401
    refused = [e for e in client.app.state.services.write_audit.events(source="directory")  # type: ignore[attr-defined]
               if e["outcome"] == "refused" and e["status"] == 401]
    assert refused and refused[-1]["issuer"] == "scim"


def test_discovery(client: TestClient) -> None:
    spc = client.get("/scim/v2/ServiceProviderConfig", headers=AUTH).json()
    assert spc["patch"]["supported"] and spc["filter"]["supported"] and spc["etag"]["supported"]
    assert not spc["bulk"]["supported"]
    assert spc["authenticationSchemes"][0]["type"] == "oauthbearertoken"
    types = client.get("/scim/v2/ResourceTypes", headers=AUTH).json()
    assert {t["id"] for t in types["Resources"]} == {"User", "Group"}
    schemas = client.get("/scim/v2/Schemas", headers=AUTH).json()
    assert USER in {s["id"] for s in schemas["Resources"]}
    assert client.get(f"/scim/v2/Schemas/{GROUP}", headers=AUTH).status_code == 200


def test_user_lifecycle_with_errors_and_etags(client: TestClient) -> None:
    name = uniq("alice")
    u = new_user(client, name, externalId=uniq("ext"), emails=[{"value": f"{name}@corp.example", "primary": True}])
    uid = u["id"]
    r = client.get(f"/scim/v2/Users/{uid}", headers=AUTH)
    assert r.status_code == 200 and r.json()["userName"] == name and r.headers["etag"] == u["meta"]["version"]
    assert "password" not in r.json()
    dup = client.post("/scim/v2/Users", headers=AUTH, json={"schemas": [USER], "userName": name.upper()})
    assert dup.status_code == 409 and dup.json()["scimType"] == "uniqueness"
    r = client.put(f"/scim/v2/Users/{uid}", headers=AUTH, json={"schemas": [USER], "userName": name, "displayName": "Alice"})
    assert r.status_code == 200 and r.json()["displayName"] == "Alice" and r.json()["meta"]["version"] != u["meta"]["version"]
    stale = patch(client, f"/scim/v2/Users/{uid}", {"op": "replace", "path": "active", "value": False},
                  headers={"if-match": u["meta"]["version"]})
    assert stale.status_code == 412
    r = patch(client, f"/scim/v2/Users/{uid}", {"op": "replace", "path": "active", "value": False})
    assert r.status_code in (200, 204)
    assert client.get(f"/scim/v2/Users/{uid}", headers=AUTH).json()["active"] is False
    assert client.delete(f"/scim/v2/Users/{uid}", headers=AUTH).status_code == 204
    gone = client.get(f"/scim/v2/Users/{uid}", headers=AUTH)
    assert gone.status_code == 404 and gone.json()["schemas"] == [ERROR]
    assert client.delete(f"/scim/v2/Users/{uid}", headers=AUTH).status_code == 404
    actions = [(e["action"], e["outcome"]) for e in client.app.state.services.write_audit.events(source="directory")  # type: ignore[attr-defined]
               if e["doc_id"] == uid]
    assert actions == [("scim_user_create", "added"), ("scim_user_replace", "updated"),
                       ("scim_user_replace", "updated"), ("scim_user_delete", "deleted")]


def test_group_members_patch_and_audit(client: TestClient) -> None:
    a, b, c_ = (new_user(client, uniq(n))["id"] for n in ("a", "b", "c"))
    g = new_group(client, uniq("eng"), a)
    gid = g["id"]
    assert [m["value"] for m in g["members"]] == [a]
    assert patch(client, f"/scim/v2/Groups/{gid}", {"op": "add", "path": "members", "value": [{"value": b}]}).status_code in (200, 204)
    assert patch(client, f"/scim/v2/Groups/{gid}", {"op": "remove", "path": f'members[value eq "{a}"]'}).status_code in (200, 204)
    members = {m["value"] for m in client.get(f"/scim/v2/Groups/{gid}", headers=AUTH).json()["members"]}
    assert members == {b}
    r = patch(client, f"/scim/v2/Groups/{gid}", {"op": "replace", "path": "members", "value": [{"value": c_}]})
    assert r.status_code in (200, 204)
    assert {m["value"] for m in client.get(f"/scim/v2/Groups/{gid}", headers=AUTH).json()["members"]} == {c_}
    user = client.get(f"/scim/v2/Users/{c_}", headers=AUTH).json()
    assert [x["value"] for x in user["groups"]] == [gid]
    bad = patch(client, f"/scim/v2/Groups/{gid}", {"op": "add", "path": "members", "value": [{"value": str(uuid.uuid4())}]})
    assert bad.status_code == 400 and bad.json()["scimType"] == "invalidValue"
    bad = client.post("/scim/v2/Groups", headers=AUTH, json={"schemas": [GROUP], "displayName": "a*b"})
    assert bad.status_code == 400
    events = [e for e in client.app.state.services.write_audit.events(source="directory")  # type: ignore[attr-defined]
              if e["doc_id"] == gid]
    assert [e["detail"].get("members_removed") for e in events] == [None, [], [a], [b]]
    assert all(e["issuer"] == "scim" and e["subject"] == "scim-client" for e in events)
    assert client.delete(f"/scim/v2/Groups/{gid}", headers=AUTH).status_code == 204


def test_entra_style_requests(client: TestClient) -> None:
    """What Entra ID sends: capitalised ops, ``"False"`` as a string, members removed with a value."""
    u = new_user(client, uniq("entra"), externalId=uniq("oid"), active=True)
    uid = u["id"]
    r = patch(client, f"/scim/v2/Users/{uid}", {"op": "Replace", "path": "active", "value": "False"})
    assert r.status_code in (200, 204), r.text
    assert client.get(f"/scim/v2/Users/{uid}", headers=AUTH).json()["active"] is False
    g = new_group(client, uniq("entra-group"))
    added = patch(client, f"/scim/v2/Groups/{g['id']}", {"op": "Add", "path": "members", "value": [{"value": uid}]})
    assert added.status_code in (200, 204)
    r = patch(client, f"/scim/v2/Groups/{g['id']}", {"op": "Remove", "path": "members", "value": [{"value": uid}]})
    assert r.status_code in (200, 204), r.text
    assert not client.get(f"/scim/v2/Groups/{g['id']}", headers=AUTH).json().get("members")
    found = client.get("/scim/v2/Groups", headers=AUTH, params={"filter": f'displayName eq "{g["displayName"].upper()}"',
                                                                 "excludedAttributes": "members"}).json()
    assert [x["id"] for x in found["Resources"]] == [g["id"]]


def test_filters_and_paging(client: TestClient) -> None:
    tag = uuid.uuid4().hex[:6]
    users = [new_user(client, f"f{tag}-{i}", externalId=f"x{tag}{i}", displayName=f"D{i}",
                      emails=[{"value": f"f{tag}-{i}@corp.example"}]) for i in range(5)]
    g = new_group(client, f"grp{tag}", users[0]["id"], users[1]["id"])

    def ids(resource: str, flt: str, **params: Any) -> list[str]:
        r = client.get(f"/scim/v2/{resource}", headers=AUTH, params={"filter": flt, **params})
        assert r.status_code == 200, (flt, r.text)
        return [x["id"] for x in r.json().get("Resources", [])]

    u = [x["id"] for x in users]
    assert ids("Users", f'userName eq "F{tag}-3"') == [u[3]]
    assert ids("Users", f'externalId eq "x{tag}2"') == [u[2]]
    assert set(ids("Users", f'userName sw "f{tag}"')) == set(u)
    assert ids("Users", f'userName co "{tag}-4"') == [u[4]]
    assert ids("Users", f'emails.value eq "f{tag}-1@corp.example"') == [u[1]]
    assert set(ids("Users", f'userName sw "f{tag}" and (displayName eq "D0" or displayName eq "D2")')) == {u[0], u[2]}
    assert set(ids("Users", f'userName sw "f{tag}" and externalId pr')) == set(u)
    assert ids("Groups", f'displayName eq "GRP{tag}"') == [g["id"]]
    assert ids("Groups", f'members.value eq "{u[1]}"') == [g["id"]]
    page = client.get("/scim/v2/Users", headers=AUTH,
                      params={"filter": f'userName sw "f{tag}"', "startIndex": 2, "count": 2, "sortBy": "userName"}).json()
    assert page["totalResults"] == 5 and page["startIndex"] == 2 and page["itemsPerPage"] == 2
    assert [x["id"] for x in page["Resources"]] == u[1:3]
    whole = client.get("/scim/v2/Users", headers=AUTH, params={"startIndex": 1, "count": 1}).json()
    assert whole["totalResults"] >= 5 and len(whole["Resources"]) == 1
    bad = client.get("/scim/v2/Users", headers=AUTH, params={"filter": "userName eq"})
    assert bad.status_code == 400 and bad.json()["scimType"] == "invalidFilter"


# -- the storage contract of scim2-server, on both catalogs ------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def contract_catalog(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Catalog]:
    """One migrated catalog per backend for the whole contract (each test starts from empty
    directory tables): migrating a catalog per test would cost minutes."""
    if request.param == "sqlite":
        cat = Catalog(f"sqlite:///{tmp_path_factory.mktemp('contract')}/catalog.sqlite3")
        yield cat
        cat.close()
        return
    if not _pg_available():
        pytest.fail("PostgreSQL at 127.0.0.1:5432 is required")
    schema = f"s_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG)
    with admin.begin() as c:
        c.execute(text(f"create schema {schema}"))
    cat = Catalog(f"{PG}?options=-csearch_path%3D{schema}")
    try:
        yield cat
    finally:
        cat.close()
        with admin.begin() as c:
            c.execute(text(f"drop schema {schema} cascade"))
        admin.dispose()


@pytest.fixture(scope="module")
def default_provider() -> Any:
    from scim2_server.utils import load_default_provider

    return load_default_provider()  # building the models costs ~0.3 s: once, not per test


class TestDirectoryStorageContract(ScimStorageContract):
    @pytest.fixture
    def provider(self, default_provider: Any) -> Any:
        return default_provider

    @pytest.fixture
    def storage(self, contract_catalog: Catalog, provider: Any) -> DirectoryScimStorage:
        with contract_catalog.engine.begin() as c:
            for table in ("directory_members", "directory_user_emails", "directory_groups", "directory_users"):
                c.execute(text(f"DELETE FROM {table}"))
        return DirectoryScimStorage(DirectoryStore(contract_catalog), provider, "acme")


# -- concurrent writes: a membership removal is never lost (both catalogs) ---------------------


def _racing_updates(engine: Any, parties: int) -> Any:
    """Hold the first ``parties`` writes of directory_groups at a barrier until each of them has
    done its read: the interleaving that lost a removal (both PATCHes read, then both write)."""
    from sqlalchemy import event

    barrier = threading.Barrier(parties, timeout=5)
    held = {"n": 0}
    lock = threading.Lock()

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith(("UPDATE DIRECTORY_GROUPS", "INSERT INTO DIRECTORY_STATE",
                                                  "UPDATE DIRECTORY_STATE")):
            with lock:
                held["n"] += 1
                wait = held["n"] <= parties
            if wait:
                try:
                    barrier.wait()
                except threading.BrokenBarrierError:
                    pass

    event.listen(engine, "before_cursor_execute", before)
    return lambda: event.remove(engine, "before_cursor_execute", before)


def test_concurrent_patches_never_lose_a_membership_removal(contract_catalog: Catalog, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, directory=DirectorySettings(scim_token_sha256=hashlib.sha256(SCIM_TOKEN.encode()).hexdigest()))
    store = DirectoryStore(contract_catalog)
    endpoint = ScimEndpoint(settings, store, WriteAudit(contract_catalog))
    x, y = (store.create_user(UserData(user_name=n, resource={"userName": n})) for n in (uniq("x"), uniq("y")))
    name = uniq("g")
    g = store.create_group(GroupData(display_name=name, members=(x.id,), resource={"displayName": name}))
    path = f"/Groups/{g.id}"
    remove_x = {"op": "remove", "path": f'members[value eq "{x.id}"]'}
    add_y = {"op": "add", "path": "members", "value": [{"value": y.id}]}
    answers: dict[str, int] = {}

    def send(name: str, op: dict[str, Any]) -> None:
        body = json.dumps({"schemas": [PATCH], "Operations": [op]}).encode()
        call = scim_request("PATCH", "http://t/scim/v2", path, {}, list(AUTH.items()), body)
        answers[name] = int(endpoint.handle(call).status)

    release = _racing_updates(contract_catalog.engine, 2)
    try:
        threads = [threading.Thread(target=send, args=("remove", remove_x)), threading.Thread(target=send, args=("add", add_y))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        release()
    after = store.get_group(g.id)
    assert after is not None
    assert answers == {"remove": 204, "add": 204}, answers  # the loser's read-modify-write was redone
    assert {m.id for m in after.members} == {y.id}  # X's removal held, Y's addition too
    assert x.id not in store.groups_of(x.id) and g.display_name not in store.groups_of(x.id)
    # With If-Match the client asked for a precondition: a stale version is a 412, never applied.
    stale = scim_request("PATCH", "http://t/scim/v2", path, {}, [*AUTH.items(), ("If-Match", f'W/"{g.version}"')],
                         json.dumps({"schemas": [PATCH], "Operations": [{"op": "add", "path": "members",
                                                                         "value": [{"value": x.id}]}]}).encode())
    assert int(endpoint.handle(stale).status) == 412
    assert {m.id for m in (store.get_group(g.id) or after).members} == {y.id}


def test_a_stale_version_never_overwrites_in_the_store(contract_catalog: Catalog) -> None:
    """Store level: two writers that both read version v; exactly one write of v applies."""
    store = DirectoryStore(contract_catalog)
    x = store.create_user(UserData(user_name=uniq("x")))
    y = store.create_user(UserData(user_name=uniq("y")))
    g = store.create_group(GroupData(display_name=uniq("g"), members=(x.id,)))
    outcome: dict[str, str] = {}

    def write(name: str, members: tuple[str, ...]) -> None:
        try:
            store.replace_group(g.id, GroupData(display_name=g.display_name, members=members), expected_version=g.version)
            outcome[name] = "ok"
        except DirectoryConflict as exc:
            outcome[name] = exc.code

    release = _racing_updates(contract_catalog.engine, 2)
    try:
        threads = [threading.Thread(target=write, args=("remove", ())), threading.Thread(target=write, args=("add", (x.id, y.id)))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        release()
    assert sorted(outcome.values()) == ["ok", "precondition_failed"], outcome
    after = store.get_group(g.id)
    assert after is not None and after.version == g.version + 1
    assert {m.id for m in after.members} == (set() if outcome["remove"] == "ok" else {x.id, y.id})


# -- bounded memory: credential before body, tooMany, members only when needed, chunked IN -----


def test_the_body_is_not_read_before_the_credential_is_checked(client: TestClient) -> None:
    read: list[int] = []

    def body() -> Iterator[bytes]:
        read.append(1)
        yield b'{"schemas": ["' + USER.encode() + b'"], "userName": "never-read"}'

    r = client.post("/scim/v2/Users", headers={"authorization": "Bearer wrong", "content-type": "application/scim+json"},
                    content=body())
    assert r.status_code == 401 and read == []
    r = client.post("/scim/v2/Users", headers=AUTH, content=body())
    assert r.status_code == 201 and read == [1]


def test_an_unnarrowed_filter_over_more_than_max_results_is_too_many(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, directory=DirectorySettings(
        scim_token_sha256=hashlib.sha256(SCIM_TOKEN.encode()).hexdigest(), max_results=3))
    with TestClient(create_app(settings)) as c:
        names = [new_user(c, uniq("many"))["userName"] for _ in range(4)]
        r = c.get("/scim/v2/Users", headers=AUTH, params={"filter": 'userName co "many"'})
        assert r.status_code == 400 and r.json()["scimType"] == "tooMany", r.text
        r = c.get("/scim/v2/Users", headers=AUTH, params={"sortBy": "userName"})
        assert r.status_code == 400 and r.json()["scimType"] == "tooMany"
        one = c.get("/scim/v2/Users", headers=AUTH, params={"filter": f'userName eq "{names[0]}"'})
        assert one.status_code == 200 and one.json()["totalResults"] == 1  # narrowed in SQL: answered
        page = c.get("/scim/v2/Users", headers=AUTH).json()  # no count: a page is at most maxResults
        assert page["totalResults"] == 4 and len(page["Resources"]) == 3


def test_members_are_read_only_when_the_search_needs_them(contract_catalog: Catalog, default_provider: Any) -> None:
    from scim2_models import SearchRequest
    from sqlalchemy import event

    store = DirectoryStore(contract_catalog)
    storage = DirectoryScimStorage(store, default_provider, "acme")
    u = store.create_user(UserData(user_name=uniq("m"), resource={"userName": "m"}))
    name = uniq("grp")
    store.create_group(GroupData(display_name=name, members=(u.id,), resource={"displayName": name}))
    group_type = next(rt for rt in default_provider.resource_types if rt.id == "Group")
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement.lower())

    event.listen(contract_catalog.engine, "before_cursor_execute", seen)
    try:
        def search(**kw: Any) -> list[Any]:
            statements.clear()
            request: SearchRequest[Any] = SearchRequest.model_validate({"filter": 'displayName co "grp"', **kw})
            return list(storage.search([group_type], request).resources)

        assert search(excludedAttributes=["members"]) and not any("directory_members" in s for s in statements)
        assert search(attributes=["displayName"]) and not any("directory_members" in s for s in statements)
        full = search()
        assert any("directory_members" in s for s in statements)
        assert any(g.display_name == name and [m.value for m in g.members] == [u.id] for g in full)
        statements.clear()  # the filter needs members: they are still read
        by_member: SearchRequest[Any] = SearchRequest.model_validate({"filter": f'members.value eq "{u.id}"',
                                                                       "excludedAttributes": ["members"]})
        assert [cast(Any, g).display_name for g in storage.search([group_type], by_member).resources] == [name]
    finally:
        event.remove(contract_catalog.engine, "before_cursor_execute", seen)


def test_long_id_lists_are_read_in_chunks(contract_catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy import event

    import store.directory as directory

    store = DirectoryStore(contract_catalog)
    users = [store.create_user(UserData(user_name=uniq("c"))) for _ in range(5)]
    g = store.create_group(GroupData(display_name=uniq("chunked"), members=tuple(u.id for u in users)))
    parent = store.create_group(GroupData(display_name=uniq("parent"), members=(g.id,)))
    monkeypatch.setattr(directory, "IN_CHUNK", 2)
    widest = [0]

    def seen(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if " in (" in statement.lower():
            widest[0] = max(widest[0], len(parameters) if isinstance(parameters, (list, tuple, dict)) else 0)

    event.listen(contract_catalog.engine, "before_cursor_execute", seen)
    try:
        got = store.get_group(g.id)
        assert got is not None and {m.id for m in got.members} == {u.id for u in users}
        assert all(got.members[i].display for i in range(5))
        by_member = store.direct_groups([u.id for u in users])
        assert {k: [gid for gid, _ in v] for k, v in by_member.items()} == {u.id: [g.id] for u in users}
        store.replace_group(g.id, GroupData(display_name=g.display_name, members=tuple(u.id for u in users)))
        assert store.groups_of(users[4].id) == {g.display_name, parent.display_name}
    finally:
        event.remove(contract_catalog.engine, "before_cursor_execute", seen)
    assert 0 < widest[0] <= 2
