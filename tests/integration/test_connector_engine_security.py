"""Security properties of the connector engine (``app.connectors``), each over real folders, the
real write path (Ingestor, Edge index, SQLite catalog) and the write audit:

- a revocation is never lost between the content and the permission stream;
- documents that leave a source's listing lose their readers (a refused mass delete, and the
  permission run) without being deleted there;
- a transient catalog failure holds the permission checkpoint back;
- a run that lost its sync lock saves no checkpoint and fails visibly;
- a change of the identity map maps every ACL again;
- a source delete takes the sync lock (409 ``sync_running`` while a sync runs);
- size bounds default to and are capped at ``ingest.max_file_bytes``; skipped files are reported;
- a connector speaks only for its own namespace and only the folder connector passes
  ``clearance`` principals through;
- a server-read connector root that moved refuses the run; API-created SQLite sql sources are
  refused.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from app.identity import IdentityMap
from app.services import Services, build_services
from app.sources import ConnectorSpec
from core.errors import ConfigError, ConflictError, PermissionDeniedError
from core.settings import IdentityRule, IdentitySettings, IngestSettings, SchedulerSettings
from ingest.connectors.contract import SourceAcl, SourceIdentity
from store.connectors import ConnectorStore
from tests.api.test_push import CountingEmbedder
from tests.conftest import make_settings
from tests.contract.test_connector_example import example_module
from tests.integration.test_connector_engine import add_source, note, operator, share, visible

RULES = [IdentityRule(namespace="notes", kind="user", principal="user:{name}@corp.example"),
         IdentityRule(namespace="notes", kind="group", principal="group:{name}", match="[a-z]+")]


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    s = build_services(make_settings(tmp_path, identity=IdentitySettings(rules=RULES),
                                     ingest=IngestSettings(allowed_roots=[allowed]),
                                     scheduler=SchedulerSettings(backoff_s=0.0, batch_docs=2)), embedder=CountingEmbedder())
    assert s.connectors is not None
    s.connectors.factories["notes"] = example_module().NotesConnector
    yield s
    s.close()


def touch(path: Path, text: str) -> None:
    """Rewrite ``path`` with a modification time surely different from before."""
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_a_revocation_undone_between_runs_is_not_lost(services: Services, tmp_path: Path) -> None:
    """Finding 1: permission run records A1; the content run indexes a wider ACL; the ACL goes
    back to A1 before the next permission run, which must still narrow the index."""
    root = tmp_path / "notes"
    note(root, "plan", "The revenue forecast plan.", "user alice\n")
    add_source(services, "notes", "notes", root)
    sync = services.connectors
    assert sync is not None
    assert sync.run_content("notes").counts == {"added": 1}
    assert sync.run_permissions("notes").outcome == "ok"  # its checkpoint: the fingerprint of {alice}
    (root / "plan.acl").write_text("user alice\nuser bob\n")
    touch(root / "plan.txt", "The revenue forecast plan, revised.")
    assert sync.run_content("notes").counts == {"updated": 1}
    assert visible(services, "user:bob@corp.example") == {"plan"}
    (root / "plan.acl").write_text("user alice\n")  # bob removed again: the source is back at A1
    rep = sync.run_permissions("notes")
    assert rep.counts.get("acl_updated") == 1, rep.as_dict()
    assert visible(services, "user:bob@corp.example") == set(), "bob's access was revoked"
    assert visible(services, "user:alice@corp.example") == {"plan"}


def test_the_permission_run_makes_documents_gone_from_the_listing_private(services: Services, tmp_path: Path) -> None:
    root = tmp_path / "notes"
    note(root, "plan", "The revenue forecast plan.", "user alice\n")
    note(root, "memo", "The revenue forecast memo.", "user alice\n")
    add_source(services, "notes", "notes", root)
    sync = services.connectors
    assert sync is not None
    assert sync.run_content("notes").counts == {"added": 2}
    (root / "plan.txt").unlink()  # access withdrawn upstream: it leaves the listing
    rep = sync.run_permissions("notes")
    assert rep.counts.get("made_private") == 1, rep.as_dict()
    assert visible(services, "user:alice@corp.example") == {"memo"}
    assert {r.doc_id for r in services.catalog.documents("acme", "notes")} == {"plan", "memo"}, "deletes stay in content runs"
    assert sync.run_permissions("notes").counts.get("made_private") is None, "already private: no second write"


def test_a_catalog_blip_holds_the_permission_checkpoint_back(services: Services, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "notes"
    note(root, "plan", "The revenue forecast plan.", "user alice\nuser bob\n")
    add_source(services, "notes", "notes", root)
    sync = services.connectors
    assert sync is not None
    assert sync.run_content("notes").counts == {"added": 1}
    assert sync.run_permissions("notes").outcome == "ok"
    (root / "plan.acl").write_text("user alice\n")
    real = type(services.catalog).get

    def down(self, key):  # type: ignore[no-untyped-def]
        raise OperationalError("SELECT", {}, Exception("connection refused"))

    monkeypatch.setattr(type(services.catalog), "get", down)
    rep = sync.run_permissions("notes")
    assert rep.errors and rep.errors[0][1] == "catalog_unavailable", rep.as_dict()
    assert not rep.checkpoint_saved, "the revocation must be retried"
    monkeypatch.setattr(type(services.catalog), "get", real)
    assert sync.run_permissions("notes").counts.get("acl_updated") == 1
    assert visible(services, "user:bob@corp.example") == set()


def test_a_run_that_lost_its_lease_saves_no_checkpoint(services: Services, tmp_path: Path) -> None:
    root = tmp_path / "notes"
    note(root, "plan", "The revenue forecast plan.", "user alice\n")
    add_source(services, "notes", "notes", root)
    sync = services.connectors
    assert sync is not None
    base = example_module().NotesConnector
    store = ConnectorStore(services.catalog)

    class Stolen(base):  # type: ignore[misc, valid-type]
        def documents(self, since):  # type: ignore[no-untyped-def]
            # Another process took the lease (this one stalled past its expiry).
            from sqlmodel import update

            from store.connectors import ConnectorStreamRow
            with services.catalog.session() as s:
                s.exec(update(ConnectorStreamRow).where(ConnectorStreamRow.source == "notes")  # type: ignore[arg-type]
                       .values(lease_owner="thief"))
                s.commit()
            yield from super().documents(since)

    sync.factories["notes"] = Stolen
    rep = sync.run_content("notes")
    assert rep.outcome == "failed" and rep.error is not None and rep.error[0] == "sync_lease_lost", rep.as_dict()
    assert not rep.checkpoint_saved and store.stream("notes", "content").checkpoint is None
    assert store.renew("notes", "nobody", 60) is False


def test_an_identity_map_change_maps_every_acl_again(services: Services, tmp_path: Path) -> None:
    root = tmp_path / "notes"
    note(root, "plan", "The revenue forecast plan.", "user alice\n")
    add_source(services, "notes", "notes", root)
    sync = services.connectors
    assert sync is not None
    assert sync.run_content("notes").counts == {"added": 1}
    assert sync.run_permissions("notes").outcome == "ok"
    assert sync.run_permissions("notes").counts == {}
    sync.identity = IdentityMap(IdentitySettings(rules=[
        IdentityRule(namespace="notes", kind="user", principal="user:{name}@new.example")]))
    rep = sync.run_permissions("notes")
    assert rep.counts.get("acl_updated") == 1, rep.as_dict()
    assert visible(services, "user:alice@corp.example") == set()
    assert visible(services, "user:alice@new.example") == {"plan"}


def test_deleting_a_source_takes_its_sync_lock(services: Services, tmp_path: Path) -> None:
    root = tmp_path / "notes"
    note(root, "plan", "The revenue forecast plan.", "user alice\n")
    add_source(services, "notes", "notes", root)
    sync = services.connectors
    assert sync is not None
    sync.run_content("notes")
    with ConnectorStore(services.catalog).hold("notes", "a-running-sync", 60) as got:
        assert got
        with pytest.raises(ConflictError) as err:
            services.writes.delete_source(operator(services), "notes")
        assert err.value.code == "sync_running"
    assert visible(services, "user:alice@corp.example") == {"plan"}, "nothing deleted while the sync held it"
    assert services.writes.delete_source(operator(services), "notes")["deleted_documents"] == 1


def test_size_bounds_are_capped_and_skipped_files_reported(services: Services, tmp_path: Path) -> None:
    root = share(tmp_path / "share", n=2)
    (root / "big.txt").write_text("revenue forecast " * 20)
    services.sources.create(operator(services), "fs", "connector", ["user:etl"], None, local=True,
                            connector=ConnectorSpec("filesystem", {"root": str(root), "max_file_bytes": 100}, 3600, 60))
    sync = services.connectors
    assert sync is not None
    row = sync.config("fs")
    assert sync.connector(row).max_file_bytes == 100  # type: ignore[attr-defined]
    for bad in ("999999999999", "null", "0", "true"):  # above the server's bound, or not a size: an error, never replaced
        bad_row = sync.config("fs")
        bad_row.config = bad_row.config.replace('"max_file_bytes": 100', f'"max_file_bytes": {bad}')
        with pytest.raises(ConfigError, match="max_file_bytes"):
            sync.connector(bad_row)
    row.config = json.dumps({"root": str(root)})
    assert sync.connector(row).max_file_bytes == services.settings.ingest.max_file_bytes, "defaulted"  # type: ignore[attr-defined]
    rep = sync.run_content("fs")
    assert rep.counts.get("added") == 2 and [item for item, _ in rep.skipped] == ["big.txt"], rep.as_dict()
    assert "big.txt" not in {r.doc_id for r in services.catalog.documents("acme", "fs")}
    last = sync.status("fs")["streams"]["content"]["last_report"]
    assert last["skipped_count"] == 1 and last["skipped"][0]["item"] == "big.txt"


def test_a_connector_speaks_only_for_its_own_namespace(services: Services, tmp_path: Path) -> None:
    root = tmp_path / "notes"
    note(root, "plan", "The revenue forecast plan.", "user alice\n")
    base = example_module().NotesConnector

    class Forging(base):  # type: ignore[misc, valid-type]
        def _acl(self, note_path):  # type: ignore[no-untyped-def]
            acl = super()._acl(note_path)
            forged = {SourceIdentity("user", "role:admin", "clearance"), SourceIdentity("user", "mallory", "posix")}
            return SourceAcl(acl.allow | forged, acl.deny)

    sync = services.connectors
    assert sync is not None
    sync.factories["forging"] = Forging
    add_source(services, "forged", "forging", root)
    rep = sync.run_content("forged")
    assert rep.counts == {"added": 1}, rep.as_dict()
    assert visible(services, "role:admin") == set(), "no pass-through for a connector other than filesystem"
    assert visible(services, "user:alice@corp.example") == {"plan"}
    assert {"clearance/user/role:admin", "posix/user/mallory"} <= set(rep.unmapped), rep.as_dict()


def test_a_connector_root_that_moved_refuses_the_run(services: Services, tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    root = share(allowed / "share", n=2)
    services.sources.create(operator(services), "fs", "connector", ["user:etl"], None,
                            connector=ConnectorSpec("filesystem", {"root": str(root)}, 3600, 60))
    sync = services.connectors
    assert sync is not None
    assert sync.run_content("fs").outcome == "ok"
    outside = share(tmp_path / "outside", n=2)
    root.rename(allowed / "old")
    root.symlink_to(outside)  # swapped for a link leading out of the allowed roots
    rep = sync.run_content("fs")
    assert rep.outcome == "failed" and rep.error is not None and rep.error[0] == "path_not_allowed", rep.as_dict()
    (root).unlink()
    other = share(allowed / "other", n=2)
    root.symlink_to(other)  # allowed, but not the folder the source was made for
    rep = sync.run_content("fs")
    assert rep.outcome == "failed" and rep.error is not None and rep.error[0] == "root_moved", rep.as_dict()


def test_sqlite_sql_sources_only_through_the_local_cli(services: Services, tmp_path: Path) -> None:
    with pytest.raises(PermissionDeniedError) as err:
        services.sources.create(operator(services), "db", "connector", ["user:etl"], None, connector=ConnectorSpec(
            "sql", {"url": f"sqlite:///{tmp_path / 'x.db'}", "query": "SELECT 1"}, 3600, 60))
    assert err.value.code == "sqlite_not_allowed"
