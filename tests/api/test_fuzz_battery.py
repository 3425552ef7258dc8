"""Fast version of ``python -m battery.fuzz``: schemathesis against the app's own OpenAPI schema,
over real HTTP (the demo corpus ingested, the hash embedder), as a search user, an admin and
nobody, with a small example budget (5 positive and 5 negative cases per operation and caller)
plus the fixed edge cases. Same checks as the battery: no 5xx, statuses, content types, headers
and bodies as documented, auth enforced on every protected route, 401 + ``WWW-Authenticate``
without a token.

Also pins the behaviours the battery found: authentication happens before the body is read,
and inputs the engine or the catalog cannot take are 422s, not 500s.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from battery.fuzz import EDGE_CASES, IDENTITIES, PUBLIC_BY_DESIGN, FuzzOutcome, run_fuzz, serve

pytestmark = pytest.mark.slow

EXAMPLES = 5


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> FuzzOutcome:
    return run_fuzz(tmp_path_factory.mktemp("fuzz"), examples=EXAMPLES, seed=20251)


def test_every_schema_operation_is_served_and_fuzzed(outcome: FuzzOutcome) -> None:
    assert len(outcome.operations) >= 15
    assert outcome.schema_only == []
    for name, rep in outcome.per_identity.items():
        assert rep.examples["positive"] >= len(outcome.operations), name
        assert rep.examples["negative"] > 0, name
        assert rep.examples["edge"] == len(EDGE_CASES), name


@pytest.mark.parametrize("identity", [i.name for i in IDENTITIES])
def test_no_server_error_and_every_response_as_documented(outcome: FuzzOutcome, identity: str) -> None:
    rep = outcome.per_identity[identity]
    assert not [s for s in rep.statuses if s >= 500], rep.statuses
    assert not any(rep.failures.values()), rep.violations[:10]
    assert rep.transport_errors == 0, rep.violations[:10]


def test_callers_reach_what_their_scopes_allow(outcome: FuzzOutcome) -> None:
    search, admin, anonymous = (outcome.per_identity[n] for n in ("search", "admin", "anonymous"))
    assert search.statuses[200] > 0 and search.statuses[403] > 0  # ingest and admin routes refuse her
    assert admin.statuses[200] > 0
    # an admin is never refused for want of a scope; the write side may refuse it by design (not a
    # writer of the source, a server folder outside ingest.allowed_roots)
    assert set(admin.refusals) <= {"source_forbidden", "path_not_allowed"}, admin.refusals
    assert set(anonymous.statuses) <= {200, 401, 404}  # 200: /healthz and /readyz; 404: unroutable only
    assert anonymous.statuses[404] == sum(anonymous.unroutable.values())


def test_every_protected_route_challenges_without_a_token(outcome: FuzzOutcome) -> None:
    probe = outcome.probe
    assert probe["protected_failed"] == []
    assert probe["protected"] >= 13
    assert set(probe["public_by_design"]) <= {f"{m} {p}" for m, p in PUBLIC_BY_DESIGN}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    with serve(tmp_path_factory.mktemp("pins"), corpus=None) as (_, services, url):
        assert services.auth.dev is not None
        yield url, services.auth.dev.mint("dave", groups=["legal"], scopes=["clearance:admin"])


@pytest.mark.parametrize("body, content_type", [
    (b"{not json", "application/json"),
    (b"\xff\xfe{", "application/json"),
    (b'{"query": 1}', "application/json"),
    (b"", "application/json"),
])
def test_authentication_comes_before_the_body(server: tuple[str, str], body: bytes, content_type: str) -> None:
    url, token = server
    for headers in ({}, {"authorization": "Bearer not-a-token"}):
        r = httpx.post(f"{url}/v1/search", content=body, headers={"content-type": content_type, **headers})
        assert r.status_code == 401, r.text
        assert r.headers["www-authenticate"].startswith('Bearer realm="clearance"')
    r = httpx.post(f"{url}/v1/search", content=body, headers={"content-type": content_type,
                                                               "authorization": f"Bearer {token}"})
    assert r.status_code in (400, 422) and r.json()["error"]["code"] == "invalid_request", r.text


@pytest.mark.parametrize("method, path, body", [
    ("POST", "/v1/search", {"query": "x", "modified_after": "0001-01-01T00:00:00+01:00"}),
    ("POST", "/v1/search", {"query": "x", "modified_before": "9999-12-31T23:59:59-01:00"}),
    ("POST", "/v1/search", {"query": "x", "sources": ["\ud800"]}),
    ("GET", "/v1/admin/audit/documents/s/d?since=0001-01-01T00:00:00%2B01:00", None),
    ("PUT", "/v1/sources/s/documents/d", {"filename": "a.md", "content": "text \ud800"}),
    ("PUT", "/v1/sources/s/documents/d", {"filename": "a.md", "content": "t", "modified_at": "0001-01-01T00:00:00+01:00"}),
    ("POST", "/v1/ingest/jobs", {"path": "/tmp/\ud800"}),
])
def test_inputs_the_backends_cannot_take_are_422(server: tuple[str, str], method: str, path: str,
                                                 body: dict | None) -> None:
    url, token = server
    # json.dumps escapes the lone surrogates (httpx's own encoder would refuse to send them)
    r = httpx.request(method, url + path, content=json.dumps(body) if body is not None else None,
                      headers={"authorization": f"Bearer {token}", "content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", r.text


def test_naive_datetimes_are_utc(server: tuple[str, str]) -> None:
    url, token = server
    r = httpx.post(f"{url}/v1/search", json={"query": "x", "modified_after": "0001-01-01T00:00:00"},
                   headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text


def test_schema_documents_the_bearer_scheme_and_error_bodies(server: tuple[str, str]) -> None:
    url, _ = server
    spec = httpx.get(f"{url}/openapi.json").json()
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        **spec["components"]["securitySchemes"]["bearerAuth"], "type": "http", "scheme": "bearer"}
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            public = (method.upper(), path) in PUBLIC_BY_DESIGN
            assert ("security" in op) != public, (method, path)
            if not public:
                challenge = op["responses"]["401"]["headers"]["WWW-Authenticate"]
                assert challenge["required"] is True
                assert op["responses"]["503"]["headers"]["Retry-After"]["required"] is True
            for status, resp in op["responses"].items():
                if status.startswith(("4", "5")) and path != "/readyz":
                    assert resp["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
