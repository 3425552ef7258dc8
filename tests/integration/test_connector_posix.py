"""The POSIX connector through the engine (``app.connectors.ConnectorSync``): a real share with
real users, groups, modes and ACLs, the real write path (Ingestor, Edge index, SQLite catalog),
the identity map from settings, the write audit.

Invariants (issue #18's done-when): a chmod, chown or setfacl of a file, or a chmod of a folder
above it, is visible to the right users after one permission run, with no embedder call, and is
in the write audit's ACL history under ``connector:<source>``; a content edit re-embeds only the
edited document; a deleted file is removed; an unknown uid is reported unmapped.
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.services import Services, build_services
from app.sources import ConnectorSpec
from auth.local import operator_entitlements
from core.settings import IdentityRule, IdentitySettings, SchedulerSettings
from core.types import Entitlements, Scope
from testkit.harness_posix import accounts, sh, unique_name
from tests.api.test_push import CountingEmbedder
from tests.conftest import make_settings

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates users and changes file owners: needs root")

ALICE, BOB, STAFF = unique_name("ita"), unique_name("itb"), unique_name("its")


class RecordingEmbedder(CountingEmbedder):
    """Counts and keeps every text it embeds (a search embeds its query too)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def embed(self, texts):  # type: ignore[no-untyped-def]
        self.seen.extend(texts)
        return super().embed(texts)


@pytest.fixture(scope="module", autouse=True)
def _accounts() -> Iterator[None]:
    with accounts(users=[ALICE, BOB], groups=[STAFF]):
        yield


@pytest.fixture
def emb() -> RecordingEmbedder:
    return RecordingEmbedder()


@pytest.fixture
def services(tmp_path: Path, emb: RecordingEmbedder) -> Iterator[Services]:
    identity = IdentitySettings(rules=[
        IdentityRule(namespace="posix", kind="user", principal="user:{name}@corp.example", match="[a-z][a-z0-9]*"),
        IdentityRule(namespace="posix", kind="group", principal="group:{name}", match="[a-z][a-z0-9]*"),
    ])
    s = build_services(make_settings(tmp_path, identity=identity, scheduler=SchedulerSettings(backoff_s=0.0)), embedder=emb)
    yield s
    s.close()


def who(name: str) -> str:
    return f"user:{name}@corp.example"


def visible(services: Services, *principals: str) -> set[str]:
    scope = Scope(Entitlements("x", "i", "acme", frozenset(principals)))
    hits = services.search_unaudited.search(scope, "revenue forecast", top_k=100, mode="dense").hits
    return {h.provenance["doc_id"] for h in hits}


def put(path: Path, text: str, mode: int, uid: int = 0, gid: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chown(path, uid, gid)
    os.chmod(path, mode)


def test_permission_changes_reach_search_without_embedding(services: Services, emb: RecordingEmbedder, tmp_path: Path) -> None:
    alice, staff = pwd.getpwnam(ALICE).pw_uid, grp.getgrnam(STAFF).gr_gid
    root = tmp_path / "share"
    root.mkdir()
    os.chmod(root, 0o755)
    put(root / "plan.txt", "The revenue forecast plan for the team.", 0o640, alice, staff)
    put(root / "memo.txt", "A memo on the revenue forecast, for bob.", 0o600)
    sh("setfacl", "-m", f"u:{BOB}:r", str(root / "memo.txt"))
    (root / "alice").mkdir()
    os.chown(root / "alice", alice, 0)
    os.chmod(root / "alice", 0o700)
    put(root / "alice" / "draft.txt", "Alice's draft revenue forecast.", 0o644, alice, staff)
    put(root / "orphan.txt", "An orphaned revenue forecast.", 0o640, 59999, staff)
    for i in range(2):  # root's own notes: one delete stays under the mass-delete guard (20 %)
        put(root / f"n{i}.txt", f"Root's note {i}.", 0o600)

    services.sources.create(operator_entitlements("acme", "tester"), "share", "connector", ["user:etl"], None, local=True,
                            connector=ConnectorSpec("posix", {"root": str(root)}, 3600, 60))
    sync = services.connectors
    assert sync is not None

    first = sync.run_content("share")
    assert first.outcome == "ok" and first.counts == {"added": 6}, first.as_dict()
    assert visible(services, who(ALICE)) == {"plan.txt", "alice/draft.txt"}
    assert visible(services, who(BOB)) == {"memo.txt"}
    assert visible(services, f"group:{STAFF}") == {"plan.txt", "orphan.txt"}, "the 0700 folder hides the draft from staff"
    assert "posix/user/uid:59999" in first.unmapped, first.unmapped
    assert sync.run_permissions("share").outcome == "ok"  # the permission stream's first checkpoint

    def permission_run(expected: int) -> None:
        before = emb.texts
        rep = sync.run_permissions("share")
        assert emb.texts == before, "a permission run never calls the embedder"
        assert rep.outcome == "ok" and rep.counts.get("acl_updated", 0) == expected, rep.as_dict()

    sh("setfacl", "-m", f"u:{BOB}:r", str(root / "plan.txt"))  # setfacl on the file
    os.chmod(root / "plan.txt", 0o600 | 0o040)  # keeps group r, mask r
    permission_run(1)
    assert "plan.txt" in visible(services, who(BOB))

    sh("setfacl", "-x", f"u:{BOB}", str(root / "memo.txt"))  # revoke
    permission_run(1)
    assert visible(services, who(BOB)) == {"plan.txt"}

    os.chmod(root / "plan.txt", 0o600)  # chmod: the group loses read (the mask too)
    permission_run(1)
    assert visible(services, f"group:{STAFF}") == {"orphan.txt"}
    assert "plan.txt" not in visible(services, who(BOB))

    os.chown(root / "orphan.txt", pwd.getpwnam(BOB).pw_uid, staff)  # chown
    permission_run(1)
    assert "orphan.txt" in visible(services, who(BOB))

    os.chmod(root / "alice", 0o750)  # only the folder changes: staff is not its group, root is
    permission_run(0)
    os.chown(root / "alice", alice, staff)
    permission_run(1)
    assert visible(services, f"group:{STAFF}") == {"orphan.txt", "alice/draft.txt"}

    history = services.write_audit.acl_history("acme", "share", "memo.txt")
    last = history[-1]
    assert (last.subject, last.action, last.outcome) == ("connector:share", "connector_permissions", "acl_updated")
    assert last.acl_before is not None and who(BOB) in last.acl_before.allow
    assert last.acl_after is not None and who(BOB) not in last.acl_after.allow

    before = list(emb.seen)
    assert sync.run_content("share").counts == {}, "permission changes never come from the content stream"
    assert emb.seen == before

    (root / "memo.txt").write_text("A rewritten memo: the revenue forecast doubled.")
    (root / "plan.txt").unlink()
    rep = sync.run_content("share")
    assert rep.counts == {"updated": 1, "deleted": 1}, rep.as_dict()
    embedded = emb.seen[len(before):]
    assert embedded and all("rewritten memo" in t for t in embedded), "only the edited document is embedded"
    assert "plan.txt" not in visible(services, who(ALICE), f"group:{STAFF}", who(BOB))
    assert visible(services, who("root")) == {"memo.txt", "n0.txt", "n1.txt"}
