"""The connector engine end to end (``app.connectors``): real folders read by the filesystem
connector and the documentation's example connector, the real write path (Ingestor, Edge index,
SQLite catalog), the identity map, the write audit.

Invariants: a permission run never calls the embedder and lands in the ACL history under the
``connector:<source>`` actor; checkpoints make a second run a no-op; one bad document fails alone;
an unmapped identity is reported and an unmapped deny makes the document private; a refused mass
delete fails the run visibly and deletes nothing; transient errors are retried, permanent ones
fail the run without raising; connector sources take no pushes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.services import Services, build_services
from app.sources import ConnectorSpec
from auth.local import operator_entitlements
from core.errors import ConflictError, InvalidRequestError, PermissionDeniedError
from core.settings import IdentityEntry, IdentityRule, IdentitySettings, SchedulerSettings
from core.types import Entitlements, Scope
from tests.api.test_push import CountingEmbedder
from tests.conftest import make_settings
from tests.contract.test_connector_example import example_module

SHARE_ACL = '[folders."."]\nallow = ["group:staff"]\n[files."secret.txt"]\nallow = ["user:bob"]\n'


def visible(services: Services, *principals: str) -> set[str]:
    scope = Scope(Entitlements("x", "i", "acme", frozenset(principals)))
    hits = services.search_unaudited.search(scope, "revenue forecast", top_k=100, mode="dense").hits
    return {h.provenance["doc_id"] for h in hits}


@pytest.fixture
def emb() -> CountingEmbedder:
    return CountingEmbedder()


@pytest.fixture
def services(tmp_path: Path, emb: CountingEmbedder) -> Iterator[Services]:
    identity = IdentitySettings(
        rules=[IdentityRule(namespace="notes", kind="user", principal="user:{name}@corp.example"),
               IdentityRule(namespace="notes", kind="group", principal="group:{name}", match="[a-z]+")],
        entries=[IdentityEntry(namespace="notes", kind="user", name="root", principals=["group:admins"])])
    s = build_services(make_settings(tmp_path, identity=identity,
                                     scheduler=SchedulerSettings(backoff_s=0.0, batch_docs=2)), embedder=emb)
    assert s.connectors is not None
    s.connectors.factories["notes"] = example_module().NotesConnector
    yield s
    s.close()


def operator(services: Services) -> Entitlements:
    return operator_entitlements(services.settings.ingest.tenant, "tester")


def add_source(services: Services, name: str, connector: str, root: Path) -> None:
    services.sources.create(operator(services), name, "connector", ["user:etl"], None, local=True,
                            connector=ConnectorSpec(connector, {"root": str(root)}, 3600, 60))


def share(root: Path, n: int = 6) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "acl.toml").write_text(SHARE_ACL)
    (root / "secret.txt").write_text("The secret revenue forecast.")
    for i in range(n - 1):
        (root / f"memo{i}.txt").write_text(f"Memo {i} on the revenue forecast.")
    return root


def note(root: Path, doc: str, text: str, acl: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{doc}.txt").write_text(text)
    (root / f"{doc}.acl").write_text(acl)


def test_content_then_permissions_through_the_write_path(services: Services, emb: CountingEmbedder, tmp_path: Path) -> None:
    root = share(tmp_path / "share")
    add_source(services, "fs", "filesystem", root)
    sync = services.connectors
    assert sync is not None

    first = sync.run_content("fs")
    assert first.outcome == "ok", first.as_dict()
    assert first.counts == {"added": 6}
    assert first.batches >= 3  # scheduler.batch_docs=2: the engine bounds batches whatever the connector yields
    assert visible(services, "user:bob") == {"secret.txt"}
    assert visible(services, "group:staff") == {f"memo{i}.txt" for i in range(5)}

    again = sync.run_content("fs")
    assert again.outcome == "ok" and again.counts == {}, "the checkpoint makes an unchanged source a no-op"

    (root / "acl.toml").write_text(SHARE_ACL.replace('allow = ["user:bob"]', 'allow = ["user:carol"]'))
    before = emb.texts
    perms = sync.run_permissions("fs")
    assert emb.texts == before, "a permission run never calls the embedder"
    assert perms.outcome == "ok" and perms.counts.get("acl_updated") == 1, perms.as_dict()
    assert visible(services, "user:bob") == set()
    assert visible(services, "user:carol") == {"secret.txt"}
    # The content stream did not see the permission change (nothing to re-read).
    before = emb.texts
    assert sync.run_content("fs").counts == {}
    assert emb.texts == before

    history = services.write_audit.acl_history("acme", "fs", "secret.txt")
    last = history[-1]
    assert (last.subject, last.action, last.outcome) == ("connector:fs", "connector_permissions", "acl_updated")
    assert last.acl_before is not None and last.acl_before.allow == {"user:bob"}
    assert last.acl_after is not None and last.acl_after.allow == {"user:carol"}
    runs = [e for e in services.write_audit.events(source="fs") if e["action"] == "connector_sync"]
    assert [e["detail"]["stream"] for e in runs] == ["content", "content", "permissions", "content"]

    (root / "memo0.txt").unlink()
    (root / "memo1.txt").write_text("Memo 1 rewritten: the revenue forecast doubled.")
    rep = sync.run_content("fs")
    assert rep.counts == {"updated": 1, "deleted": 1}, rep.as_dict()
    assert "memo0.txt" not in visible(services, "group:staff")
    status = sync.status("fs")
    assert status["streams"]["content"]["runs"] == 4 and status["streams"]["content"]["failures"] == 0


def test_a_refused_mass_delete_fails_the_run_and_deletes_nothing(services: Services, tmp_path: Path) -> None:
    root = share(tmp_path / "share")
    add_source(services, "fs", "filesystem", root)
    sync = services.connectors
    assert sync is not None
    assert sync.run_content("fs").counts == {"added": 6}
    for i in range(4):
        (root / f"memo{i}.txt").unlink()
    rep = sync.run_content("fs")
    assert rep.outcome == "failed" and rep.error is not None and rep.error[0] == "mass_delete_refused", rep.as_dict()
    assert visible(services, "group:staff") == {"memo4.txt"}, "the vanished documents lost their readers at once"
    keys = {r.doc_id for r in services.catalog.documents("acme", "fs")}
    assert len(keys) == 6, "nothing was deleted"
    assert rep.counts.get("made_private") == 4, rep.as_dict()
    history = services.write_audit.acl_history("acme", "fs", "memo0.txt")
    assert history[-1].acl_after is not None and history[-1].acl_after.allow == set(), "made private through the audited path"
    st = sync.status("fs")["streams"]["content"]
    assert st["last_outcome"] == "failed" and st["consecutive_failures"] == 1
    assert "mass_delete_refused" in st["last_error"]


def test_identity_map_unmapped_reported_unmapped_deny_private(services: Services, tmp_path: Path) -> None:
    root = tmp_path / "notes"
    note(root, "plan", "The revenue forecast plan.", "user alice\ngroup staff\n")
    note(root, "ops", "Ops revenue forecast.", "user root\ngroup Weird-Group\n")
    note(root, "hr", "HR revenue forecast.", "group staff\ndeny group Bad-Group\n")
    note(root, "bad", "", "user alice\n")
    (root / "bad.txt").unlink()
    (root / "bad.txt").write_bytes(b"\x00" * 10)  # nothing to index: fails alone
    sync = services.connectors
    assert sync is not None
    add_source(services, "notes", "notes", root)
    rep = sync.run_content("notes")
    assert rep.counts.get("added") == 3 and rep.counts.get("failed") == 1, rep.as_dict()
    assert rep.outcome == "partial" and [e[0] for e in rep.errors] == ["bad"]
    assert visible(services, "user:alice@corp.example") == {"plan"}
    assert visible(services, "group:admins") == {"ops"}  # the explicit entry
    assert visible(services, "group:staff") == {"plan"}, "hr is private: its deny names someone unmapped"
    assert rep.private_docs == ["hr"]
    # Both group names fail the group rule's match; "root" maps through its explicit entry.
    unmapped = {(u["namespace"], u["kind"], u["name"]): u["count"] for u in sync.status("notes")["unmapped"]}
    assert unmapped == {("notes", "group", "Weird-Group"): 1, ("notes", "group", "Bad-Group"): 1}
    # The identities a later map resolves leave the report.
    sync.identity._entries[("notes", "group", "Weird-Group")] = frozenset({"group:weird"})
    (root / "ops.acl").write_text("user root\ngroup Weird-Group\n\n")
    assert sync.run_permissions("notes").outcome == "ok"
    assert {u["name"] for u in sync.status("notes")["unmapped"]} == {"Bad-Group"}
    assert visible(services, "group:weird") == {"ops"}


def test_transient_errors_are_retried_permanent_ones_fail_without_raising(services: Services, tmp_path: Path) -> None:
    root = tmp_path / "notes"
    note(root, "plan", "The revenue forecast plan.", "user alice\n")
    sync = services.connectors
    assert sync is not None
    notes_cls = example_module().NotesConnector
    failures = {"left": 2}

    class Flaky(notes_cls):  # type: ignore[misc, valid-type]
        def documents(self, since):  # type: ignore[no-untyped-def]
            if failures["left"]:
                failures["left"] -= 1
                raise ConnectionResetError("the source hung up")
            return super().documents(since)

    class Broken(notes_cls):  # type: ignore[misc, valid-type]
        def listing(self):  # type: ignore[no-untyped-def]
            raise ValueError("a bug in the connector")

    sync.factories["flaky"] = Flaky
    sync.factories["broken"] = Broken
    add_source(services, "flaky", "flaky", root)
    add_source(services, "broken", "broken", root)
    rep = sync.run_content("flaky")
    assert rep.outcome == "ok" and rep.attempts == 3 and rep.counts == {"added": 1}, rep.as_dict()
    bad = sync.run_content("broken")
    assert bad.outcome == "failed" and bad.attempts == 1 and bad.error == ("ValueError", "a bug in the connector")
    assert sync.status("broken")["streams"]["content"]["failures"] == 1


def test_connector_sources_take_no_pushes_and_need_an_admin(services: Services, tmp_path: Path) -> None:
    root = share(tmp_path / "share")
    add_source(services, "fs", "filesystem", root)
    etl = Entitlements("etl", "i", "acme", frozenset({"user:etl"}), scopes=frozenset({"clearance:ingest"}))
    with pytest.raises(ConflictError) as exc:
        services.writes.authorize(etl, "put", "fs", "x.txt", kind="push")
    assert exc.value.code == "source_kind_mismatch"
    with pytest.raises(PermissionDeniedError):
        services.sources.create(etl, "fs2", "connector", ["user:etl"], None,
                                connector=ConnectorSpec("filesystem", {"root": str(root)}))
    with pytest.raises(InvalidRequestError) as bad:
        services.sources.create(operator(services), "fs3", "connector", ["user:etl"], None, local=True,
                                connector=ConnectorSpec("filesystem", {"rooot": str(root)}))
    assert "root" in bad.value.message
    # Over the API (not local), a connector's root is a server folder: only under ingest.allowed_roots.
    with pytest.raises(PermissionDeniedError) as denied:
        services.sources.create(operator(services), "fs4", "connector", ["user:etl"], None,
                                connector=ConnectorSpec("filesystem", {"root": "/etc"}))
    assert denied.value.code == "path_not_allowed"


def test_one_run_per_source_at_a_time(services: Services, tmp_path: Path) -> None:
    """Per source, not per stream: a permission run between a content run's read and its write
    would lose a revocation (docs/connectors.md)."""
    root = share(tmp_path / "share")
    add_source(services, "fs", "filesystem", root)
    add_source(services, "other", "filesystem", share(tmp_path / "other"))
    sync = services.connectors
    assert sync is not None
    with sync.store.hold("fs", "another-process", 60) as got:
        assert got
        for stream in ("content", "permissions"):
            with pytest.raises(ConflictError) as exc:
                sync.run(stream=stream, source="fs")
            assert exc.value.code == "sync_running"
            assert sync.run_held("fs", stream, missed=False) is None
        assert sync.run_content("other").outcome == "ok", "other sources are not held"
    assert sync.run_content("fs").outcome == "ok"


def test_a_document_failing_for_a_transient_reason_holds_the_checkpoint_back(services: Services, emb: CountingEmbedder,
                                                                             tmp_path: Path) -> None:
    root = share(tmp_path / "share", n=2)
    add_source(services, "fs", "filesystem", root)
    sync = services.connectors
    assert sync is not None
    real = emb.embed

    def failing(texts):  # type: ignore[no-untyped-def]
        raise RuntimeError("model crashed")

    emb.embed = failing  # type: ignore[method-assign]
    rep = sync.run_content("fs")
    assert rep.counts.get("failed") == 2 and not rep.checkpoint_saved
    emb.embed = real  # type: ignore[method-assign]
    os.sync()
    assert sync.run_content("fs").counts == {"added": 2}, "the next run retried them"


def test_admin_api_registers_syncs_and_reports(tmp_path: Path) -> None:
    """Over HTTP: an admin registers a connector source (root confined to ingest.allowed_roots),
    runs a sync now, reads its status with unmapped identities; a non-admin is refused."""
    from core.settings import IngestSettings
    from tests.api.ops_env import ADMIN, HTTP, INGEST, running

    allowed = tmp_path / "allowed"
    root = share(allowed / "share")
    (root / "acl.toml").write_text(SHARE_ACL)
    with running(tmp_path, ingest=IngestSettings(allowed_roots=[allowed])) as env:
        body = {"name": "fs", "kind": "connector", "writers": ["user:etl"], "connector": "filesystem",
                "config": {"root": str(root)}, "content_interval_s": 600, "permission_interval_s": 30}
        r = HTTP.post(f"{env.url}/v1/admin/sources", json=body, headers=env.auth("etl", scopes=[INGEST]))
        assert r.status_code == 403
        r = HTTP.post(f"{env.url}/v1/admin/sources", json={**body, "config": {"root": "/etc"}},
                      headers=env.auth("admin", scopes=[ADMIN]))
        assert r.status_code == 403 and r.json()["error"]["code"] == "path_not_allowed"
        r = HTTP.post(f"{env.url}/v1/admin/sources", json=body, headers=env.auth("admin", scopes=[ADMIN]))
        assert r.status_code == 201, r.text
        assert r.json()["kind"] == "connector"
        r = HTTP.post(f"{env.url}/v1/admin/sources/fs/sync", headers=env.auth("etl", scopes=[INGEST]))
        assert r.status_code == 403
        r = HTTP.post(f"{env.url}/v1/admin/sources/fs/sync", headers=env.auth("admin", scopes=[ADMIN]))
        assert r.status_code == 200 and r.json()["counts"] == {"added": 6}, r.text
        r = HTTP.post(f"{env.url}/v1/admin/sources/fs/sync?stream=permissions", headers=env.auth("admin", scopes=[ADMIN]))
        assert r.status_code == 200 and r.json()["outcome"] == "ok"
        st = HTTP.get(f"{env.url}/v1/admin/sources/fs/connector", headers=env.auth("admin", scopes=[ADMIN])).json()
        assert st["connector"] == "filesystem" and st["streams"]["content"]["runs"] == 1
        assert st["streams"]["permissions"]["interval_s"] == 30
        listing = HTTP.get(f"{env.url}/v1/admin/connectors", headers=env.auth("admin", scopes=[ADMIN])).json()
        assert "filesystem" in listing["installed"] and [s["source"] for s in listing["sources"]] == ["fs"]
        r = HTTP.post(f"{env.url}/v1/admin/sources/nope/sync", headers=env.auth("admin", scopes=[ADMIN]))
        assert r.status_code == 404
        events = [e for e in env.services.write_audit.events(source="fs") if e["action"] == "connector_sync"]
        assert {(e["subject"], e["outcome"]) for e in events} == {("etl", "refused"), ("admin", "requested"),
                                                                   ("connector:fs", "ok")}, "who asked, who wrote"


def test_cli_adds_a_connector_source_syncs_it_and_shows_it(tmp_path: Path) -> None:
    import json as _json

    from typer.testing import CliRunner

    from cli.main import app

    root = share(tmp_path / "share")
    env = {"CLEARANCE_STORAGE__DATA_DIR": str(tmp_path / "var"), "CLEARANCE_EMBEDDER__KIND": "hash"}
    runner = CliRunner()
    r = runner.invoke(app, ["sources", "add", "fs", "--connector", "filesystem", "--config",
                            _json.dumps({"root": str(root)}), "--content-interval", "600", "--permission-interval",
                            "20", "--writer", "user:etl"], env=env)
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["sync", "fs", "--json"], env=env)
    assert r.exit_code == 0, r.output
    assert _json.loads(r.output)["counts"] == {"added": 6}
    r = runner.invoke(app, ["sync", "fs", "--permissions"], env=env)
    assert r.exit_code == 0 and "permissions: ok" in r.output, r.output
    r = runner.invoke(app, ["sources", "show", "fs"], env=env)
    assert r.exit_code == 0 and "connector: filesystem" in r.output and "content: 1 runs" in r.output, r.output
    r = runner.invoke(app, ["sources", "add", "bad", "--connector", "nosuch", "--config", "{}"], env=env)
    assert r.exit_code == 2 and "unknown_connector" in r.output
    for i in range(5):
        (root / f"memo{i}.txt").unlink()
    r = runner.invoke(app, ["sync", "fs"], env=env)
    assert r.exit_code == 1 and "mass_delete_refused" in r.output, "a refused mass delete is a visible failure"


def test_connector_secrets_never_reach_the_status_or_the_audit() -> None:
    from app.connectors import mask_config, scrub

    config = {"dsn": "postgresql://app:s3cr3t@db/x", "password": "hunter2", "nested": {"api_key": "k"}, "root": "/srv"}
    masked = mask_config(config)
    assert masked == {"dsn": "postgresql://app:***@db/x", "password": "***", "nested": {"api_key": "***"}, "root": "/srv"}
    assert "s3cr3t" not in scrub("could not connect to postgresql://app:s3cr3t@db/x")
    assert "hunter2" not in scrub("login failed (password='hunter2')")
