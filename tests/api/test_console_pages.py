"""The console without a browser (these run everywhere; tests/integration/test_console.py drives
it in Chromium): session cookie flags, CSRF refusals, admin-only pages and ``search_as``, the
audit trail of every chunk view, the report file route's confinement."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.console import session as sess
from app.services import Services, build_services
from core.errors import PermissionDeniedError
from core.settings import ConsoleSettings, IngestSettings
from core.types import Entitlements, Scope
from ingest.sources import FilesystemSource
from tests.conftest import make_settings

DOCS = {"company/memo.md": "# Memo\n\nZebra travel memo for everyone.\n",
        "finance/forecast.md": "# Forecast\n\nZebra revenue forecast, finance only.\n"}
ACL = '[folders."company"]\nallow = ["tenant:acme"]\n[folders."finance"]\nallow = ["group:finance"]\n'


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    root = tmp_path_factory.mktemp("kb")
    for rel, text in DOCS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, "utf-8")
    (root / "acl.toml").write_text(ACL, "utf-8")
    reports = tmp_path_factory.mktemp("reports")
    (reports / "a.md").write_text("# A\n\n| m | v |\n|---|---:|\n| x | 1 |\n", "utf-8")
    (reports.parent / "outside.md").write_text("not a report", "utf-8")
    settings = make_settings(tmp_path_factory.mktemp("var"), console=ConsoleSettings(reports_dir=reports))
    svc = build_services(settings)
    assert svc.ingestor.sync(FilesystemSource(root, "kb")).counts == {"added": 2}
    yield svc
    svc.close()


def _client(services: Services, base_url: str = "http://127.0.0.1") -> TestClient:
    return TestClient(create_app(services.settings, services), base_url=base_url)


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html
    return m.group(1)


def _sign_in(c: TestClient, persona: str) -> str:
    csrf = _csrf(c.get("/console/signin").text)
    r = c.post("/console/signin/dev", data={"csrf": csrf, "persona": persona}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/search"
    return _csrf(c.get("/console/search").text)  # a new token after sign-in


def test_cookie_is_httponly_lax_and_secure_off_loopback(services: Services) -> None:
    loop = _client(services).get("/console/signin")
    cookie = loop.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie
    remote = _client(services, "https://console.example.com").get("/console/signin")
    assert "; secure" in remote.headers["set-cookie"].lower()
    assert "default-src 'none'" in loop.headers["content-security-policy"]
    assert loop.headers["cache-control"] == "no-store"


def test_a_tampered_session_is_no_session(services: Services) -> None:
    c = _client(services)
    _sign_in(c, "alice")
    value = c.cookies.get(sess.COOKIE)
    assert value and sess.decode(b"other key" * 4, value) is None
    body, sig = value.split(".")
    real = sess.decode(sess.session_key(services), value)
    assert real is not None and real.token
    forged = sess.Session(token=real.token, csrf="attacker-chosen")  # other content, the same signature
    c.cookies.clear()
    c.cookies.set(sess.COOKIE, sess.encode(b"k" * 32, forged).split(".")[0] + "." + sig)
    r = c.get("/console/search", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/signin"


def test_posts_without_the_csrf_token_are_403(services: Services) -> None:
    c = _client(services)
    signin = c.post("/console/signin/dev", data={"persona": "alice"})
    assert signin.status_code == 403 and 'data-code="csrf_failed"' in signin.text
    csrf = _sign_in(c, "alice")
    n = services.audit.count()
    for data in ({"q": "zebra"}, {"q": "zebra", "csrf": ""}, {"q": "zebra", "csrf": csrf + "x"}):
        r = c.post("/console/search", data=data)
        assert r.status_code == 403 and 'data-code="csrf_failed"' in r.text
    assert c.post("/console/signout", data={}).status_code == 403
    assert services.audit.count() == n
    assert c.post("/console/search", data={"q": "zebra", "csrf": csrf}).status_code == 200
    assert services.audit.count() == n + 1


def test_each_search_and_document_view_is_one_audited_read(services: Services) -> None:
    c = _client(services)
    csrf = _sign_in(c, "alice")
    n = services.audit.count()
    r = c.post("/console/search", data={"q": "zebra", "mode": "bm25", "csrf": csrf, "explain": "on"})
    assert r.status_code == 200
    assert set(re.findall(r'data-doc="([^"]+)"', r.text)) == {"company/memo.md", "finance/forecast.md"}
    assert "<mark>Zebra</mark>" in r.text and "group:finance" in r.text  # granted by
    r = c.get("/console/documents/kb/finance/forecast.md")
    assert r.status_code == 200 and "Zebra revenue forecast" in r.text
    events = list(services.audit.export())[n:]
    assert [(e["action"], e["subject"]) for e in events] == [("search", "alice"), ("document", "alice")]

    c2 = _client(services)
    _sign_in(c2, "erin")
    assert c2.get("/console/documents/kb/finance/forecast.md").status_code == 404


def test_view_as_and_admin_pages_are_for_admins(services: Services) -> None:
    c = _client(services)
    csrf = _sign_in(c, "bob")
    for path in ("/console/view-as", "/console/sources", "/console/jobs"):
        r = c.get(path)
        assert r.status_code == 403 and 'data-code="insufficient_scope"' in r.text, path
    n = services.audit.count()
    r = c.post("/console/view-as", data={"csrf": csrf, "q": "zebra", "as_groups": "finance"})
    assert r.status_code == 403 and services.audit.count() == n

    admin = _client(services)
    csrf = _sign_in(admin, "ops")
    assert admin.get("/console/sources").status_code == 200
    r = admin.post("/console/view-as", data={"csrf": csrf, "q": "zebra", "mode": "bm25", "as_user": "fred",
                                              "as_groups": "finance"})
    assert r.status_code == 200 and "Viewing as" in r.text
    assert "finance/forecast.md" in r.text
    ev = list(services.audit.export())[-1]
    assert ev["subject"] == "ops" and ev["params"]["view_as"]["principals"] == ["group:finance", "tenant:acme", "user:fred"]


def test_search_as_refuses_non_admins_and_other_tenants(services: Services) -> None:
    user = Entitlements(subject="bob", issuer="t", tenant="acme", principals=frozenset({"user:bob", "tenant:acme"}),
                        scopes=frozenset({"clearance:search"}))
    viewed = Entitlements(subject="x", issuer="t", tenant="acme", principals=frozenset({"group:finance", "tenant:acme"}))
    with pytest.raises(PermissionDeniedError):
        services.reads.search_as(user, Scope(entitlements=viewed), "zebra", top_k=5, mode="bm25", explain=False, params={})
    admin = Entitlements(subject="ops", issuer="t", tenant="acme", principals=frozenset({"user:ops", "tenant:acme"}),
                         scopes=frozenset({"clearance:admin"}))
    other = Entitlements(subject="x", issuer="t", tenant="globex", principals=frozenset({"tenant:globex"}))
    with pytest.raises(PermissionDeniedError):
        services.reads.search_as(admin, Scope(entitlements=other), "zebra", top_k=5, mode="bm25", explain=False, params={})
    out = services.reads.search_as(admin, Scope(entitlements=viewed), "zebra", top_k=5, mode="bm25", explain=False,
                                   params={})
    assert {h.doc_id for h in out.result.hits} == {"company/memo.md", "finance/forecast.md"}


def test_report_files_stay_inside_the_reports_folder(services: Services) -> None:
    c = _client(services)
    _sign_in(c, "erin")
    assert c.get("/console/evals/a").status_code == 200
    assert c.get("/console/evals/files/a.md").status_code == 200
    for bad in ("..%2Foutside.md", "outside.md", ".a.md", "a.txt"):
        assert c.get(f"/console/evals/files/{bad}").status_code == 404, bad
    assert _client(services).get("/console/evals/files/a.md", follow_redirects=False).status_code == 303  # signed out


def test_stale_source_and_low_confidence_banners(tmp_path: Path) -> None:
    root = tmp_path / "kb"
    (root / "company").mkdir(parents=True)
    (root / "company" / "memo.md").write_text(DOCS["company/memo.md"], "utf-8")
    (root / "acl.toml").write_text('[folders."company"]\nallow = ["tenant:acme"]\n', "utf-8")
    settings = make_settings(tmp_path, ingest=IngestSettings(source_sla_s={"kb": 1}))
    svc = build_services(settings)
    try:
        assert svc.ingestor.sync(FilesystemSource(root, "kb")).counts == {"added": 1}
        time.sleep(1.2)  # beyond the 1 s freshness SLA
        c = _client(svc)
        csrf = _sign_in(c, "erin")
        r = c.post("/console/search", data={"q": "quantum chromodynamics lattice", "mode": "hybrid", "csrf": csrf})
        assert r.status_code == 200
        assert 'class="banner stale"' in r.text and "beyond its freshness SLA" in r.text
        assert 'class="banner low"' in r.text  # the hash embedder's cosines are far below the threshold
    finally:
        svc.close()
