"""The operator API (``/v1/admin/*``, scope ``clearance:admin``) and CLI (``clearance status |
sources | jobs``) over a real folder sync and real pushes: sources with their last sync, lag
and root; jobs with counts and per-document errors; documents with their status; resync of a
filesystem source from the root the catalog recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.settings import IngestSettings
from testkit.sources import register_source
from tests.api.ops_env import ADMIN, HTTP, INGEST, SEARCH, Env, doc_ids, running


def _tree(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "acl.toml").write_text('[folders."."]\nallow = ["tenant:acme"]\n[folders."fin"]\nallow = ["group:finance"]\n')
    (root / "fin").mkdir()
    (root / "fin" / "forecast.md").write_text("# Forecast\n\nRevenue forecast for the year.\n")
    (root / "memo.txt").write_text("Company memo about travel.")
    (root / "tool.exe").write_text("not a document")
    return root


def _sync(env: Env, folder: Path) -> dict:
    register_source(env.services, "share", kind="filesystem", root=folder)  # writer user:etl; dev mode reads its root
    r = HTTP.post(f"{env.url}/v1/ingest/jobs", json={"path": str(folder), "source": "share"},
                  headers=env.auth("etl", scopes=[INGEST]))
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_sources_jobs_documents_and_resync(tmp_path: Path) -> None:
    folder = _tree(tmp_path / "share")
    with running(tmp_path, ingest=IngestSettings(source_sla_s={"share": 3600})) as env:
        assert _sync(env, folder)["counts"] == {"added": 2, "failed": 1}
        env.push("erp", "po-1", "Purchase order for laptops.", ["group:finance"])
        admin = env.auth("root", scopes=[ADMIN])

        sources = {s["name"]: s for s in HTTP.get(f"{env.url}/v1/admin/sources", headers=admin).json()["sources"]}
        share, erp = sources["share"], sources["erp"]
        assert share["kind"] == "filesystem" and share["root"] == str(folder.resolve())
        assert share["last_success_at"] and 0 <= share["lag_s"] < 60 and share["sla_s"] == 3600
        assert share["stale"] is False and share["documents"] == {"indexed": 2} and share["last_job_id"]
        assert erp["kind"] == "push" and erp["root"] is None and erp["documents"] == {"indexed": 1}

        [job] = HTTP.get(f"{env.url}/v1/admin/jobs", headers=admin).json()["jobs"]
        assert job["source"] == "share" and job["state"] == "done" and job["finished_at"]
        assert job["counts"]["added"] == 2 and job["counts"]["failed"] == 1
        assert job["errors"] == [{"doc": "acme/share/tool.exe", "code": "unsupported_type",
                                  "message": job["errors"][0]["message"]}]

        docs = HTTP.get(f"{env.url}/v1/admin/documents", params={"source": "share"}, headers=admin).json()
        status = {d["doc_id"]: (d["status"], d["error_code"]) for d in docs["documents"]}
        assert status == {"fin/forecast.md": ("indexed", None), "memo.txt": ("indexed", None),
                          "tool.exe": ("failed", "unsupported_type")}
        assert docs["total"] == 3
        failed = HTTP.get(f"{env.url}/v1/admin/documents", params={"state": "failed"}, headers=admin).json()
        assert [d["doc_id"] for d in failed["documents"]] == ["tool.exe"]
        page = HTTP.get(f"{env.url}/v1/admin/documents", params={"limit": 1, "offset": 1}, headers=admin).json()
        assert page["total"] == 4 and len(page["documents"]) == 1

        # The folder changes; the operator resyncs from the recorded root.
        (folder / "memo.txt").unlink()
        (folder / "fin" / "budget.md").write_text("# Budget\n\nCapital budget for new offices.\n")
        # A resync is a write: the source's writer (etl), not the admin. One of its two documents
        # goes, more than the mass-delete guard lets through without allow_deletes.
        r = HTTP.post(f"{env.url}/v1/admin/sources/share/resync", headers=admin)
        assert r.status_code == 403 and r.json()["error"]["code"] == "source_forbidden"
        etl = env.auth("etl", scopes=[INGEST])
        r = HTTP.post(f"{env.url}/v1/admin/sources/share/resync", headers=etl)
        assert r.status_code == 409 and r.json()["error"]["code"] == "mass_delete_refused"
        r = HTTP.post(f"{env.url}/v1/admin/sources/share/resync", params={"allow_deletes": "true"}, headers=etl)
        assert r.status_code == 200, r.text
        assert r.json()["counts"] == {"added": 1, "deleted": 1, "unchanged": 1, "failed": 1}
        assert "fin/budget.md" in doc_ids(env.search(env.auth("alice", ["finance"]), "capital budget offices"))
        jobs = HTTP.get(f"{env.url}/v1/admin/jobs", params={"source": "share", "limit": 1}, headers=admin).json()["jobs"]
        assert jobs[0]["id"] == r.json()["job_id"]

        push_resync = HTTP.post(f"{env.url}/v1/admin/sources/erp/resync", headers=etl)
        assert push_resync.status_code == 422 and push_resync.json()["error"]["code"] == "not_resyncable"
        nope = HTTP.post(f"{env.url}/v1/admin/sources/nope/resync", headers=etl)
        assert nope.status_code == 404 and nope.json()["error"]["code"] == "unknown_source"


def test_admin_endpoints_need_the_admin_scope(tmp_path: Path) -> None:
    with running(tmp_path) as env:
        worker = env.auth("etl", scopes=[INGEST, SEARCH])
        for method, path in (("GET", "/v1/admin/sources"), ("GET", "/v1/admin/jobs"), ("GET", "/v1/admin/documents"),
                             ("POST", "/v1/admin/sources"), ("DELETE", "/v1/admin/sources/x"),
                             ("GET", "/v1/admin/audit/documents/x/y"), ("GET", "/v1/admin/documents/x/y/acl-history")):
            r = HTTP.request(method, f"{env.url}{path}", headers=worker)
            assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope", path
            assert HTTP.request(method, f"{env.url}{path}").status_code == 401, path


def test_cli_reads_the_catalog_while_the_server_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cli.main import app

    folder = _tree(tmp_path / "share")
    with running(tmp_path, ingest=IngestSettings(source_sla_s={"share": 3600, "crm": 60})) as env:
        _sync(env, folder)
        env.search(env.auth("alice", ["finance"]), "revenue forecast")
        monkeypatch.setenv("CLEARANCE_STORAGE__DATA_DIR", str(tmp_path / "var"))
        monkeypatch.setenv("CLEARANCE_INGEST__SOURCE_SLA_S", json.dumps({"share": 3600, "crm": 60}))
        runner = CliRunner()

        res = runner.invoke(app, ["status", "--json", "--server", env.url])
        assert res.exit_code == 0, res.output
        status = json.loads(res.stdout)
        assert status["catalog"]["ok"] and status["documents"] == {"indexed": 2}
        assert status["stale_sources"] == ["crm"] and status["audit"]["events"] == 1
        assert status["jobs"][0]["counts"]["failed"] == 1 and status["server"]["status"] == "degraded"

        res = runner.invoke(app, ["sources", "--json"])
        assert res.exit_code == 0, res.output
        assert {s["name"]: s["kind"] for s in json.loads(res.stdout)["sources"]} == {"crm": "unknown",
                                                                                    "share": "filesystem"}
        res = runner.invoke(app, ["jobs", "--json", "--source", "share"])
        assert res.exit_code == 0 and json.loads(res.stdout)["jobs"][0]["errors"][0]["code"] == "unsupported_type"

        human = runner.invoke(app, ["status"])
        assert human.exit_code == 0 and "share" in human.stdout and "STALE" in human.stdout
        assert "unsupported_type" in runner.invoke(app, ["jobs"]).stdout
