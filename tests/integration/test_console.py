"""Issue 15's acceptance: the web console driven in real Chromium (Debian's ``chromium`` with
Playwright for Python; never a downloaded browser), against the real app over real HTTP.

The demo corpus is ingested into a temp data dir (hash embedder, bm25 searches: what each user
sees is compared with the ACL manifest, an oracle independent of ranking). Screenshots of every
page at 1280 and 390 px land in ``reports/console/`` (not committed). Sign-in through the real
npm ``oidc-provider`` (authorization code + PKCE) runs where node is available.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api.app import create_app
from app.services import Services, build_services
from auth.local import operator_entitlements
from core.settings import AuthSettings, ConsoleSettings, IssuerSettings
from ingest.manifest import AclManifest
from ingest.sources import FilesystemSource
from testkit import browser
from testkit.live_server import free_port
from testkit.oidc.harness import NodeUnavailable, OidcProvider
from tests.conftest import DEMO, REPO, LiveServer, make_settings

pytestmark = pytest.mark.slow

SHOTS = REPO / "reports" / "console"
WIDTHS = {"wide": (1280, 900), "narrow": (390, 844)}
EVAL_REPORTS = ("cisi", "med")


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    try:
        with browser.chromium() as b:
            yield b
    except browser.BrowserUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two eval reports (JSON, Markdown, plots) copied from the repository's reports/eval."""
    folder = tmp_path_factory.mktemp("reports") / "eval"
    folder.mkdir()
    for name in EVAL_REPORTS:
        for f in (REPO / "reports" / "eval").glob(f"{name}*"):
            shutil.copy(f, folder / f.name)
    (folder.parent / "secret.txt").write_text("outside the reports folder", "utf-8")
    return folder


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, reports: Path) -> Iterator[tuple[Services, LiveServer]]:
    settings = make_settings(tmp_path_factory.mktemp("console"), console=ConsoleSettings(reports_dir=reports))
    services = build_services(settings)
    # Registered as the CLI does (`clearance ingest demo`), with the demo operator "ops" as writer.
    report = services.writes.sync_local(operator_entitlements("acme"), DEMO, "demo", writers=["user:ops"])
    assert report.errors == [] and report.counts == {"added": 32}
    with LiveServer(create_app(settings, services)) as server:
        yield services, server
    services.close()


def _allowed(principals: set[str]) -> set[str]:
    manifest = AclManifest.load(DEMO)
    src = FilesystemSource(DEMO, "demo")
    return {p.relative_to(DEMO).as_posix() for p in src.paths()
            if manifest.acl_for(p.relative_to(DEMO).as_posix()).visible_to(frozenset(principals))}


class Console:
    """One browser context (its own cookies) on the console."""

    def __init__(self, browser: Any, url: str, width: str = "wide") -> None:
        w, h = WIDTHS[width]
        self.context = browser.new_context(viewport={"width": w, "height": h})
        self.page = self.context.new_page()
        self.url = url

    def __enter__(self) -> Console:
        return self

    def __exit__(self, *exc: object) -> None:
        self.context.close()

    def goto(self, path: str) -> Any:
        return self.page.goto(self.url + path)

    def sign_in(self, persona: str) -> None:
        self.goto("/console/signin")
        self.page.get_by_role("button", name=re.compile(rf"^{persona}\b")).click()
        self.page.wait_for_url(f"{self.url}/console/search")

    def search(self, query: str, mode: str = "bm25", explain: bool = False) -> list[str]:
        page = self.page
        page.get_by_label("Query").fill(query)
        if mode != "hybrid" or explain:
            if page.locator("form.search details").get_attribute("open") is None:
                page.locator("summary", has_text="Options").click()
            page.get_by_label("Mode").select_option(mode)
            if explain:
                page.get_by_label("Explain").check()
        page.get_by_role("button", name="Search", exact=True).click()
        page.wait_for_load_state()
        return self.docs()

    def docs(self) -> list[str]:
        return [str(d) for d in self.page.locator("li.doc").evaluate_all("els => els.map(e => e.dataset.doc)")]

    def shoot(self, name: str) -> None:
        """The current page at both widths, full length."""
        SHOTS.mkdir(parents=True, exist_ok=True)
        for w, h in WIDTHS.values():
            self.page.set_viewport_size({"width": w, "height": h})
            self.page.screenshot(path=str(SHOTS / f"{name}-{w}.png"), full_page=True)
        self.page.set_viewport_size({"width": WIDTHS["wide"][0], "height": WIDTHS["wide"][1]})


def _audit(services: Services) -> list[dict[str, Any]]:
    return list(services.audit.export())


# ------------------------------------------------------------------ tests

@pytest.mark.parametrize("persona, groups, query, must", [
    ("alice", ["finance"], "travel expenses hotel cap", {"company/travel-and-expense-policy.md",
                                                         "finance/expense-report-summary.md"}),
    ("bob", ["hr"], "harassment investigation retaliation", {"hr/investigation-notes.eml"}),
])
def test_dev_sign_in_and_search_see_what_the_manifest_allows(chromium: Any, demo: tuple[Services, LiveServer],
                                                             persona: str, groups: list[str], query: str,
                                                             must: set[str]) -> None:
    _, server = demo
    allowed = _allowed({f"user:{persona}", "tenant:acme", *(f"group:{g}" for g in groups)})
    with Console(chromium, server.url) as c:
        c.goto("/console/signin")
        assert c.page.locator(".banner.dev").is_visible()  # the dev-mode banner
        if persona == "alice":
            c.shoot("signin")
        c.sign_in(persona)
        seen: set[str] = set()
        for q in (query, "salary bands for L4 engineers", "Lumen Analytics acquisition board resolution",
                  "Northwind litigation hold"):
            docs = c.search(q)
            assert set(docs) <= allowed, f"{q!r} leaked {set(docs) - allowed}"
            seen |= set(docs)
        assert must <= seen
        assert "finance/board-pack.html" not in seen  # alice is denied it, bob is not in finance
        if persona == "bob":
            assert "hr/investigation-notes.eml" in seen
        else:
            assert "hr/investigation-notes.eml" not in seen

        docs = c.search(query, explain=True)
        assert docs and set(docs) <= allowed
        assert c.page.locator("table.explain").count() > 0
        granted = c.page.locator("table.explain tfoot td").first.inner_text()
        assert granted.split(", ")[0] in {f"user:{persona}", "tenant:acme", *(f"group:{g}" for g in groups)}
        marks = c.page.locator("p.snippet mark")
        assert marks.count() > 0 and "**" not in c.page.locator("p.snippet").first.inner_text()
        if persona == "alice":
            c.shoot("search")
            c.page.locator("li.doc h3 a").first.click()
            c.page.wait_for_load_state()
            assert c.page.locator("pre.chunk").count() > 0
            c.shoot("document")


def test_snippets_are_escaped_and_marked(demo: tuple[Services, LiveServer]) -> None:
    from api.console.render import marked

    assert str(marked("<b>x</b> **hotel** & **<i>**")) == "&lt;b&gt;x&lt;/b&gt; <mark>hotel</mark> &amp; <mark>&lt;i&gt;</mark>"


def test_non_admin_gets_403_on_view_as_and_admin_pages(chromium: Any, demo: tuple[Services, LiveServer]) -> None:
    services, server = demo
    with Console(chromium, server.url) as c:
        c.sign_in("alice")
        assert c.page.get_by_role("link", name="View as").count() == 0  # not offered
        for path in ("/console/view-as", "/console/sources", "/console/jobs"):
            resp = c.goto(path)
            assert resp.status == 403, path
            assert c.page.locator("code[data-code]").inner_text() == "insufficient_scope"
        c.shoot("forbidden")
        csrf = c.page.locator("input[name=csrf]").first.get_attribute("value")
        before = services.audit.count()
        for path, form in (("/console/view-as", {"q": "salary", "persona": "bob"}),
                           ("/console/sources/demo/resync", {})):
            resp = c.context.request.post(server.url + path, form={"csrf": csrf, **form}, max_redirects=0)
            assert resp.status == 403, path
        assert services.audit.count() == before  # nothing was searched


def test_admin_view_as_is_audited_with_admin_and_principals(chromium: Any, demo: tuple[Services, LiveServer]) -> None:
    services, server = demo
    with Console(chromium, server.url) as c:
        c.sign_in("ops")
        c.goto("/console/view-as")
        c.page.get_by_label("Demo persona").select_option("bob")
        docs = c.search("harassment investigation retaliation")
        assert c.page.locator(".banner.viewas").is_visible()
        assert "hr/investigation-notes.eml" in docs
        assert set(docs) <= _allowed({"user:bob", "group:hr", "tenant:acme"})
        c.shoot("view-as")
        ev = _audit(services)[-1]
        assert ev["action"] == "search" and ev["subject"] == "ops" and ev["status"] == 200
        va = ev["params"]["view_as"]
        assert va["admin"] == "ops" and "role:clearance:admin" not in va["principals"]
        assert va["principals"] == ["group:hr", "tenant:acme", "user:bob"]
        assert va["admin_principals"] == ["tenant:acme", "user:ops"]
        assert {ch["doc_id"] for ch in ev["chunks"]} == set(docs)

        # typed principals, no persona
        c.goto("/console/view-as")
        c.page.get_by_label("User", exact=True).fill("hana")
        c.page.get_by_label("Groups", exact=True).fill("hr")
        docs = c.search("harassment investigation retaliation")
        assert "hr/investigation-notes.eml" not in docs  # only bob is granted it
        assert _audit(services)[-1]["params"]["view_as"]["principals"] == ["group:hr", "tenant:acme", "user:hana"]


def test_a_form_post_without_the_csrf_token_is_refused(chromium: Any, demo: tuple[Services, LiveServer]) -> None:
    services, server = demo
    with Console(chromium, server.url) as c:
        c.sign_in("alice")
        before = services.audit.count()
        c.page.get_by_label("Query").fill("travel")
        c.page.locator("form.search input[name=csrf]").evaluate("e => e.remove()")  # what a forged form lacks
        with c.page.expect_navigation() as nav:
            c.page.get_by_role("button", name="Search", exact=True).click()
        assert nav.value.status == 403
        assert c.page.locator("code[data-code]").inner_text() == "csrf_failed"
        resp = c.context.request.post(server.url + "/console/search", form={"q": "travel", "csrf": "forged"})
        assert resp.status == 403 and "csrf_failed" in resp.text()
        assert services.audit.count() == before
        # signing out needs the token too
        resp = c.context.request.post(server.url + "/console/signout", form={}, max_redirects=0)
        assert resp.status == 403
        assert c.goto("/console/search").status == 200  # still signed in
        c.page.get_by_role("button", name="Sign out").click()
        c.page.wait_for_url(f"{server.url}/console/signin")
        cookie = next(k for k in c.context.cookies() if k["name"] == "clearance_console")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and not cookie["secure"]  # loopback: not Secure
        assert c.goto("/console/search").url.endswith("/console/signin")


def test_every_console_view_of_chunks_is_one_audited_read(chromium: Any, demo: tuple[Services, LiveServer]) -> None:
    """The console adds no way to read a chunk: each search and each document view is exactly one
    event of the audited read service, with the chunks it showed."""
    services, server = demo
    with Console(chromium, server.url) as c:
        c.sign_in("carol")
        n = services.audit.count()
        docs = c.search("Kubernetes postmortem on-call")
        events = _audit(services)[n:]
        assert [e["action"] for e in events] == ["search"]
        assert events[0]["subject"] == "carol" and events[0]["params"]["via"] == "console"
        assert {ch["doc_id"] for ch in events[0]["chunks"]} == set(docs)

        n = services.audit.count()
        c.page.locator("li.doc h3 a").first.click()
        c.page.wait_for_load_state()
        shown = c.page.locator("pre.chunk").count()
        events = _audit(services)[n:]
        assert [e["action"] for e in events] == ["document"]
        assert events[0]["params"]["doc_id"] == docs[0] and len(events[0]["chunks"]) == shown > 0

        n = services.audit.count()  # a document carol may not read: 404 like a missing one, audited
        assert c.goto("/console/documents/demo/hr/investigation-notes.eml").status == 404
        events = _audit(services)[n:]
        assert [(e["action"], e["status"], e["chunks"]) for e in events] == [("document", 404, [])]


def test_admin_pages_sources_jobs_resync_and_document_access(chromium: Any, demo: tuple[Services, LiveServer],
                                                             tmp_path: Path) -> None:
    services, server = demo
    # A second filesystem source, registered but never synced: its resync parses 32 files, long
    # enough to watch the job run.
    copy = tmp_path / "demo-copy"
    shutil.copytree(DEMO, copy)
    services.sources.create(operator_entitlements("acme"), "copy", "filesystem", ["user:ops"], str(copy), local=True)
    with Console(chromium, server.url) as c:
        c.sign_in("ops")
        c.goto("/console/sources")
        row = c.page.locator("tr[data-source=demo]")
        assert "fresh" in row.inner_text() and "indexed 32" in row.inner_text()
        assert "never" in c.page.locator("tr[data-source=copy]").inner_text()
        c.shoot("sources")
        c.page.locator("tr[data-source=copy]").get_by_role("button", name="Resync").click()
        c.page.wait_for_url(re.compile(r"/console/jobs\?source=copy$"))
        # Landing while the sync runs: the page refreshes itself (no script) until the job is done.
        assert c.page.locator("meta[http-equiv=refresh]").count() == 1
        states = [c.page.locator("tr[data-job]").first.get_attribute("data-state")
                  if c.page.locator("tr[data-job]").count() else None]
        c.shoot("jobs-running")
        done = c.page.locator("tr[data-job][data-state=done]")
        done.wait_for(timeout=180_000)  # only the page's own refreshes bring it
        assert states[0] in (None, "running")
        assert c.page.locator("tr[data-job]").count() == 1
        assert "32" in done.inner_text()  # added
        assert c.page.locator("meta[http-equiv=refresh]").count() == 0
        c.shoot("jobs")

        # the board pack: ops cannot read its chunks, but sees who can
        resp = c.goto("/console/documents/demo/finance/board-pack.html")
        assert resp.status == 200
        assert c.page.locator("pre.chunk").count() == 0
        ops = c.page.locator("section.ops").inner_text()
        assert "group:exec" in ops and "group:finance" in ops and "user:alice" in ops
        c.shoot("document-admin")


def test_eval_reports_render_compare_and_stay_in_their_folder(chromium: Any, demo: tuple[Services, LiveServer]) -> None:
    _, server = demo
    with Console(chromium, server.url) as c:
        c.sign_in("erin")
        c.goto("/console/evals")
        assert c.page.get_by_role("link", name="cisi").count() == 1
        c.shoot("evals")
        c.page.get_by_role("link", name="cisi").click()
        c.page.wait_for_load_state()
        assert c.page.locator("article.report table").count() >= 2
        imgs = c.page.locator("article.report img")
        assert imgs.count() == 2
        assert all(c.page.evaluate("i => i.naturalWidth", imgs.nth(i).element_handle()) > 0 for i in range(2))
        c.shoot("report")
        c.goto("/console/evals")
        c.page.get_by_label("Baseline").select_option("cisi")
        c.page.get_by_label("Candidate").select_option("med")
        c.page.get_by_role("button", name="Compare").click()
        c.page.wait_for_load_state()
        assert c.page.locator("table.compare tbody tr", has_text="modes.hybrid.metrics.ndcg@10").count() == 1
        c.shoot("compare")
        for bad in ("..%2Fsecret.txt", "secret.txt", "..%2F..%2Fpyproject.toml", ".hidden.png"):
            assert c.goto(f"/console/evals/files/{bad}").status == 404, bad
        assert c.goto("/console/evals/files/cisi-modes.png").status == 200


# ------------------------------------------------------------------ sign-in through oidc-provider

USERS = {"alice": {"groups": ["finance"]}, "olga": {"groups": [], "roles": ["clearance:admin"]}}
SECRET = "console-secret-4b1f7c2e9a"


@pytest.fixture(scope="module")
def oidc_console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OidcProvider, LiveServer]]:
    port = free_port()
    client = {"client_id": "clearance-console", "client_secret": SECRET,
              "redirect_uris": [f"http://127.0.0.1:{port}/console/callback"],
              "scope": "openid clearance:search clearance:admin"}
    op = OidcProvider(tmp_path_factory.mktemp("idp"), [client], users=USERS)
    try:
        op.start()
    except NodeUnavailable as exc:
        pytest.skip(str(exc))
    try:
        corpus = tmp_path_factory.mktemp("kb")
        for rel, text in {"company/handbook.md": "Zebra handbook for everyone.\n",
                          "finance/budget.md": "Zebra budget, finance only.\n",
                          "hr/salaries.md": "Zebra salaries, hr only.\n"}.items():
            (corpus / rel).parent.mkdir(parents=True, exist_ok=True)
            (corpus / rel).write_text(text, "utf-8")
        (corpus / "acl.toml").write_text('[folders."company"]\nallow = ["tenant:acme"]\n[folders."finance"]\n'
                                         'allow = ["group:finance"]\n[folders."hr"]\nallow = ["group:hr"]\n', "utf-8")
        issuer = IssuerSettings(issuer=op.issuer, audience="clearance", algorithms=["RS256"], tenant="acme",
                                require_at_jwt=True)
        settings = make_settings(tmp_path_factory.mktemp("clearance"), auth=AuthSettings(mode="oidc", issuers=[issuer]),
                                 console=ConsoleSettings(client_id="clearance-console", client_secret=SECRET,
                                                         scopes=["openid", "clearance:search"],
                                                         resource=OidcProvider.RESOURCE))
        services = build_services(settings)
        assert services.ingestor.sync(FilesystemSource(corpus, "kb")).counts == {"added": 3}
        with LiveServer(create_app(settings, services), port=port) as server:
            yield op, server
        services.close()
    finally:
        op.stop()


def test_sign_in_through_the_real_oidc_provider(chromium: Any, oidc_console: tuple[OidcProvider, LiveServer]) -> None:
    op, server = oidc_console
    with Console(chromium, server.url) as c:
        c.goto("/console/signin")
        assert c.page.locator(".banner.dev").count() == 0
        c.shoot("signin-oidc")
        c.page.get_by_role("link", name="Sign in").click()
        c.page.wait_for_url(re.compile(re.escape(op.issuer)))  # the provider's own login page
        c.page.locator("input[name=login]").fill("alice")
        c.page.locator("input[name=password]").fill("any")
        c.page.get_by_role("button", name="Sign-in").click()
        c.page.get_by_role("button", name="Continue").click()  # consent
        c.page.wait_for_url(f"{server.url}/console/search")
        assert c.page.locator(".who .subject").inner_text().startswith("alice")
        assert set(c.search("zebra")) == {"company/handbook.md", "finance/budget.md"}
        c.page.get_by_role("button", name="Sign out").click()
        c.page.wait_for_url(f"{server.url}/console/signin")

        # a callback this browser did not start is refused
        resp = c.goto("/console/callback?code=stolen&state=forged")
        assert resp.status == 401 and c.page.locator("code[data-code]").inner_text() == "invalid_state"
