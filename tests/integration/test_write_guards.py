"""Mistakes on the write side fail closed, end to end (real app, Edge, SQLite, hash embedder, the
real CLI in-process): server folders only under ``ingest.allowed_roots`` with every path
resolved first; links and special files inside a root skipped with a code; manifests checked
strictly before any write; the mass-delete guard; dry runs; deleting a source on purpose."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.sources import SourceRegistry
from core.errors import InvalidRequestError, PermissionDeniedError
from core.settings import AuthSettings, IngestSettings, IssuerSettings
from ingest.manifest import ManifestError
from ingest.sources import FilesystemSource
from retrieval.payload import ChunkPayload
from testkit.sources import register_source
from tests.api.ops_env import HTTP, INGEST, Env, running
from tests.conftest import make_settings


def tree(root: Path, n: int = 5, manifest: str | None = None) -> Path:
    (root / "fin").mkdir(parents=True, exist_ok=True)
    (root / "acl.toml").write_text(manifest if manifest is not None else
                                   '[folders."."]\nallow = ["tenant:acme"]\n[folders."fin"]\nallow = ["group:finance"]\n'
                                   '[files."fin/secret.md"]\nallow = ["user:bob"]\n')
    (root / "fin" / "secret.md").write_text("# Secret\n\nThe secret revenue plan.\n")
    for i in range(n - 1):
        (root / f"memo{i}.txt").write_text(f"Company memo {i} about revenue.")
    return root


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    with running(tmp_path, ingest=IngestSettings(allowed_roots=[allowed])) as e:
        yield e


def _job(e: Env, path: str, source: str = "share", **extra: object) -> object:
    return HTTP.post(f"{e.url}/v1/ingest/jobs", json={"path": path, "source": source, **extra},
                     headers=e.auth("etl", scopes=[INGEST]))


# ------------------------------------------------------------------------- server folders


def test_server_folders_only_under_allowed_roots_resolved_first(env: Env, tmp_path: Path) -> None:
    """Reproduction: an ingest token made the server index /etc."""
    allowed = tmp_path / "allowed"
    share = tree(allowed / "share")
    outside = tree(tmp_path / "outside")
    register_source(env.services, "share", kind="filesystem", root=share)
    (allowed / "escape").symlink_to(outside, target_is_directory=True)
    for path in ("/etc", str(outside), f"{share}/../../outside", str(allowed / "escape"), "/proc/self/cwd", "/dev"):
        r = _job(env, path)
        assert r.status_code == 403 and r.json()["error"]["code"] == "path_not_allowed", (path, r.text)
    r = _job(env, "share")
    assert r.status_code == 422 and r.json()["error"]["code"] == "path_not_absolute"
    assert env.services.catalog.document_counts() == {}
    r = _job(env, str(share))
    assert r.status_code == 200 and r.json()["counts"] == {"added": 5}
    refused = [w for w in env.services.write_audit.events(source="share") if w["outcome"] == "refused"]
    assert len(refused) == 6 and {w["code"] for w in refused} == {"path_not_allowed"}  # the 403s, not the 422


def test_empty_allowed_roots_refuse_server_folders_outside_dev_mode(tmp_path: Path) -> None:
    share = tree(tmp_path / "share")
    oidc = make_settings(tmp_path, auth=AuthSettings(mode="oidc", issuers=[IssuerSettings(issuer="https://idp/")]))
    reg = SourceRegistry(oidc, None, None)  # type: ignore[arg-type]  (the folder check needs no catalog)
    with pytest.raises(PermissionDeniedError) as exc:
        reg.server_folder(str(share), str(share))  # even the source's registered root
    assert exc.value.code == "path_not_allowed" and "CLEARANCE_INGEST__ALLOWED_ROOTS" in exc.value.message
    dev = make_settings(tmp_path)
    assert SourceRegistry(dev, None, None).server_folder(str(share), str(share)) == share.resolve()  # type: ignore[arg-type]
    with pytest.raises(PermissionDeniedError):
        SourceRegistry(dev, None, None).server_folder(str(tmp_path), str(share))  # type: ignore[arg-type]
    allowed = make_settings(tmp_path, ingest=IngestSettings(allowed_roots=[tmp_path]),
                            auth=AuthSettings(mode="oidc", issuers=[IssuerSettings(issuer="https://idp/")]))
    assert SourceRegistry(allowed, None, None).server_folder(str(share), None) == share.resolve()  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError):
        SourceRegistry(allowed, None, None).server_folder(str(tmp_path / "nope"), None)  # type: ignore[arg-type]


def test_links_out_of_the_root_and_special_files_are_skipped_with_a_code(env: Env, tmp_path: Path) -> None:
    share = tree(tmp_path / "allowed" / "share")
    secret = tmp_path / "secret.txt"
    secret.write_text("the server's own secret")
    (share / "leak.txt").symlink_to(secret)
    (share / "inner.txt").symlink_to(share / "memo0.txt")  # a link inside the root is fine
    (share / "passwd.txt").symlink_to("/etc/passwd")
    (share / "null.txt").symlink_to("/dev/null")
    os.mkfifo(share / "pipe.txt")  # would block a reader forever
    register_source(env.services, "share", kind="filesystem", root=share)
    r = _job(env, str(share))
    assert r.status_code == 200, r.text
    errors = {e["doc"].rsplit("/", 1)[-1]: e["code"] for e in r.json()["errors"]}
    assert errors == {"leak.txt": "symlink_escape", "passwd.txt": "symlink_escape", "null.txt": "symlink_escape",
                      "pipe.txt": "not_regular_file"}
    assert r.json()["counts"]["added"] == 6  # five files and the inner link
    texts = [ChunkPayload.from_index(h.payload).text for row in env.services.catalog.documents()
             for h in env.services.index.retrieve(row.ids)]
    assert not any("secret" in t and "server" in t for t in texts)


# ----------------------------------------------------------------------------- manifests


def test_a_typo_in_the_manifest_fails_the_job_before_any_write(env: Env, tmp_path: Path) -> None:
    """Reproduction: [files."secrte.md"] matched nothing and secret.md kept its folder's allow."""
    share = tree(tmp_path / "allowed" / "share", manifest=(
        'tenant = "acmee"\n[folders."."]\nallow = ["tenant:acme"]\n[folders."fin"]\nallow = ["group:finance"]\n'
        '[files."fin/secrte.md"]\nallow = ["user:bob"]\n[folders."finance"]\ndeny = ["group:*"]\n'
        '[files."memo0.txt"]\nalow = ["user:bob"]\n'))
    register_source(env.services, "share", kind="filesystem", root=share)
    r = _job(env, str(share))
    assert r.status_code == 422 and r.json()["error"]["code"] == "manifest_invalid"
    msg = r.json()["error"]["message"]
    assert "'fin/secret.md'" in msg and "secrte" in msg  # the nearest existing path is named
    assert "'acmee'" in msg and "group:*" in msg and "'alow'" in msg and "did you mean 'allow'" in msg
    assert "[folders.\"finance\"] matches no folder; nearest existing path: 'fin'" in msg
    assert env.services.catalog.document_counts() == {} and env.services.catalog.jobs() == []
    [ev] = [w for w in env.services.write_audit.events(source="share") if w["action"] == "sync"]
    assert ev["outcome"] == "refused" and ev["code"] == "manifest_invalid"
    with pytest.raises(ManifestError) as exc:
        FilesystemSource(share, "share", tenant="acme")
    assert len(exc.value.problems) == 5


# ------------------------------------------------------------------------ mass deletes


def test_mass_delete_guard_over_the_api(env: Env, tmp_path: Path) -> None:
    share = tree(tmp_path / "allowed" / "share", n=10)
    register_source(env.services, "share", kind="filesystem", root=share)
    assert _job(env, str(share)).json()["counts"] == {"added": 10}
    (share / "memo0.txt").unlink()
    (share / "memo1.txt").unlink()  # 2 of 10: exactly the limit, allowed
    assert _job(env, str(share)).json()["counts"] == {"deleted": 2, "unchanged": 8}
    for i in range(2, 5):
        (share / f"memo{i}.txt").unlink()  # 3 of 8 > 0.2
    r = _job(env, str(share))
    assert r.status_code == 409 and r.json()["error"]["code"] == "mass_delete_refused"
    assert "3 of the 8" in r.json()["error"]["message"] and env.services.catalog.document_counts()["share"] == {"indexed": 8}
    r = _job(env, str(share), allow_deletes=True)
    assert r.status_code == 200 and r.json()["counts"]["deleted"] == 3 and r.json()["mass_delete"] is True
    job_events = [w for w in env.services.write_audit.events(source="share") if w["action"] == "sync" and not w["doc_id"]]
    assert [w["outcome"] for w in job_events] == ["done", "done", "refused", "done"]
    assert job_events[-1]["detail"]["mass_delete"] is True


# ---------------------------------------------------------------------------------- CLI


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("CLEARANCE_STORAGE__DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("CLEARANCE_EMBEDDER__KIND", "hash")
    return CliRunner()


def _run(cli: CliRunner, *args: str) -> object:
    from cli.main import app

    return cli.invoke(app, list(args))


def test_cli_wrong_path_cannot_wipe_a_source_and_sources_are_deleted_on_purpose(cli: CliRunner, tmp_path: Path) -> None:
    """Reproduction: `clearance ingest demo/finance --source demo` deleted most of the source."""
    share = tree(tmp_path / "share", n=8)
    res = _run(cli, "ingest", str(share), "--source", "share")
    assert res.exit_code == 0, res.output
    assert "added 8" in res.stdout
    res = _run(cli, "sources", "show", "share", "--json")
    shown = json.loads(res.stdout)
    assert shown["kind"] == "filesystem" and shown["root"] == str(share.resolve())
    assert shown["writers"] == ["user:clearance-cli"] and shown["documents"] == {"indexed": 8}

    res = _run(cli, "ingest", str(share / "fin"), "--source", "share")  # a wrong but existing path
    assert res.exit_code == 2 and "mass_delete_refused" in res.output and "delete all 8 documents" in res.output
    res = _run(cli, "ingest", str(share / "fin"), "--source", "share", "--dry-run")
    assert res.exit_code == 0 and "delete 8" in res.stdout and "would be refused" in res.stdout
    assert json.loads(_run(cli, "sources", "--json").stdout)["sources"][0]["documents"] == {"indexed": 8}

    res = _run(cli, "sources", "delete", "share", "--yes")
    assert res.exit_code == 0 and "deleted with 8 documents" in res.stdout
    assert _run(cli, "sources", "show", "share").exit_code == 2
    res = _run(cli, "audit", "export", "--kind", "write")
    kinds = [(x["action"], x["outcome"]) for x in map(json.loads, res.stdout.splitlines()) if not x["doc_id"]]
    assert kinds == [("source_create", "created"), ("local_sync", "done"), ("local_sync", "refused"),
                     ("source_delete", "deleted")]


def test_cli_dry_run_prints_acls_plan_and_private_files(cli: CliRunner, tmp_path: Path) -> None:
    share = tree(tmp_path / "share", n=3, manifest='[folders."fin"]\nallow = ["group:finance"]\ndeny = ["user:alice"]\n')
    res = _run(cli, "ingest", str(share), "--dry-run")
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "add       fin/secret.md: allow [group:finance] deny [user:alice]" in out
    assert "add       memo0.txt: private: no principal can read it" in out
    assert "warning memo1.txt: private: no principal can read it" in out and "would: add 3" in out
    assert _run(cli, "sources", "--json").stdout.count('"name"') == 0  # a dry run registers nothing
    res = _run(cli, "ingest", str(share), "--json")
    assert res.exit_code == 0, res.output
    assert sorted(json.loads(res.stdout)["warnings"]) == ["memo0.txt: private: no principal can read it",
                                                          "memo1.txt: private: no principal can read it"]
    (share / "memo0.txt").write_text("changed")
    plan = json.loads(_run(cli, "ingest", str(share), "--dry-run", "--json").stdout)
    assert plan["counts"] == {"change": 1, "unchanged": 2}

    bad = tree(tmp_path / "bad", manifest='[files."fin/secrte.md"]\nallow = ["user:bob"]\ntenant = "x"\n')
    res = _run(cli, "ingest", str(bad), "--dry-run")
    assert res.exit_code == 2 and "error [manifest_invalid]" in res.output and "'fin/secret.md'" in res.output
