"""The connector contract suite on ``PosixConnector`` over a real folder with real users, groups
and POSIX ACLs (``setfacl``), plus the POSIX-specific rules: mode bits, the ACL mask, a private
parent folder, ``other`` (fail closed unless ``world_readable`` says who "anyone" is), unknown
ids, links and FIFOs that are never followed or opened, and checkpoints that survive the clock."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.errors import ConfigError
from ingest.connectors.contract import IdentityKind, PermissionChange, SourceAcl, SourceIdentity
from ingest.connectors.posix import DEFAULT_MAX_FILE_BYTES, PosixConnector
from testkit.connector_contract import ConnectorContract, drain
from testkit.harness_posix import ChildError, PosixHarness, accounts, in_child, sh, unique_name

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates users and changes file owners: needs root")

ALICE, BOB, STAFF, ENG = unique_name("cta"), unique_name("ctb"), unique_name("cts"), unique_name("cte")


@pytest.fixture(scope="module", autouse=True)
def _accounts() -> Iterator[None]:
    with accounts(users=[ALICE, BOB], groups=[STAFF, ENG]):
        yield


class TestPosixConnector(ConnectorContract):
    READERS: tuple[tuple[IdentityKind, str], ...] = (("user", ALICE), ("user", BOB), ("group", STAFF))

    @pytest.fixture
    def harness(self, tmp_path: Path) -> Iterator[PosixHarness]:
        h = PosixHarness(tmp_path / "share")
        yield h
        h.close()


def u(name: str) -> SourceIdentity:
    return SourceIdentity("user", name, "posix")


def g(name: str) -> SourceIdentity:
    return SourceIdentity("group", name, "posix")


def acls(root: Path, **config: object) -> dict[str, SourceAcl]:
    c = PosixConnector("share", {"root": str(root), **config})
    docs, _ = drain(c.documents(None), None)
    return {d.doc_id: d.acl for d in docs}


@pytest.fixture
def share(tmp_path: Path) -> Path:
    root = tmp_path / "share"
    root.mkdir()
    os.chmod(root, 0o755)
    return root


def put(path: Path, mode: int, uid: int = 0, gid: int = 0, text: str = "hello") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chown(path, uid, gid)
    os.chmod(path, mode)
    return path


def uid(name: str) -> int:
    return pwd.getpwnam(name).pw_uid


def gid(name: str) -> int:
    return grp.getgrnam(name).gr_gid


def test_owner_group_and_mode_bits(share: Path) -> None:
    put(share / "both.txt", 0o640, uid(ALICE), gid(STAFF))
    put(share / "owner.txt", 0o600, uid(ALICE), gid(STAFF))
    put(share / "none.txt", 0o000, uid(ALICE), gid(STAFF))
    got = acls(share)
    assert got["both.txt"].allow == {u(ALICE), g(STAFF)}
    assert got["owner.txt"].allow == {u(ALICE)}
    assert got["none.txt"].allow == frozenset()


def test_owner_without_read_is_denied_when_the_group_reads(share: Path) -> None:
    """The kernel stops at the owner entry: an owner without r cannot read through its group."""
    put(share / "f.txt", 0o040, uid(ALICE), gid(STAFF))
    acl = acls(share)["f.txt"]
    assert acl.allow == {g(STAFF)} and u(ALICE) in acl.deny


def test_named_acl_entries_respect_the_mask(share: Path) -> None:
    f = put(share / "f.txt", 0o600)
    sh("setfacl", "-m", f"u:{ALICE}:r,g:{ENG}:r", str(f))
    assert acls(share)["f.txt"].allow == {u("root"), u(ALICE), g(ENG)}
    sh("setfacl", "-m", "m::-", str(f))  # the mask removes every named entry's read
    assert acls(share)["f.txt"].allow == {u("root")}
    sh("setfacl", "-m", "m::r", str(f))
    sh("setfacl", "-x", f"u:{ALICE}", str(f))
    assert acls(share)["f.txt"].allow == {u("root"), g(ENG)}


def test_named_user_without_read_is_denied_against_a_group_grant(share: Path) -> None:
    f = put(share / "f.txt", 0o640, 0, gid(STAFF))
    sh("setfacl", "-m", f"u:{BOB}:-", str(f))
    acl = acls(share)["f.txt"]
    assert g(STAFF) in acl.allow and u(BOB) in acl.deny and u(BOB) not in acl.allow


def test_other_is_private_unless_world_readable_is_configured(share: Path) -> None:
    put(share / "pub.txt", 0o644)
    assert acls(share)["pub.txt"].allow == {u("root"), g("root")}  # never "everyone" by default
    world = acls(share, world_readable="group:everyone")["pub.txt"]
    assert g("everyone") in world.allow


def test_a_private_parent_folder_hides_its_files_from_everyone_but_its_owner(share: Path) -> None:
    d = share / "alice"
    d.mkdir()
    os.chown(d, uid(ALICE), 0)
    os.chmod(d, 0o700)
    f = put(d / "notes.txt", 0o644, uid(ALICE), gid(STAFF))
    sh("setfacl", "-m", f"u:{BOB}:r", str(f))
    got = acls(share, world_readable="group:everyone")["alice/notes.txt"]
    assert got.allow == {u(ALICE)}, got
    os.chmod(d, 0o750)  # group root may now search it; the file's group (staff) still may not
    got = acls(share, world_readable="group:everyone")["alice/notes.txt"]
    assert got.allow == {u(ALICE), g("root")}, got  # root's group reaches it and reads it as "other"
    os.chmod(d, 0o711)  # anyone may search: the file's own bits decide
    got = acls(share)["alice/notes.txt"]
    assert got.allow == {u(ALICE), u(BOB), g(STAFF)}, got


def test_a_folder_entry_denying_search_is_carried_down(share: Path) -> None:
    d = share / "team"
    d.mkdir()
    os.chmod(d, 0o755)
    sh("setfacl", "-m", f"u:{BOB}:-", str(d))
    put(d / "f.txt", 0o644)
    got = acls(share, world_readable="group:everyone")["team/f.txt"]
    assert u(BOB) in got.deny and u(BOB) not in got.allow
    assert g("everyone") in got.allow


def test_unknown_ids_are_named_by_number(share: Path) -> None:
    put(share / "f.txt", 0o640, 59999, 59998)
    acl = acls(share)["f.txt"]
    assert acl.allow == {u("uid:59999"), g("gid:59998")}


def test_links_fifos_and_escapes_are_never_read(share: Path, tmp_path: Path) -> None:
    outside = put(tmp_path / "secret.txt", 0o644, text="outside secret")
    put(share / "ok.txt", 0o644)
    (share / "escape.txt").symlink_to(outside)
    (share / "inner.txt").symlink_to(share / "ok.txt")
    (share / "dirlink").symlink_to(tmp_path)
    os.mkfifo(share / "pipe.txt")
    c = PosixConnector("share", {"root": str(share)})
    docs, _ = drain(c.documents(None), None)
    assert [d.doc_id for d in docs] == ["ok.txt"]
    assert all(b"outside secret" not in d.content for d in docs)
    assert {(s.rel, s.code) for s in c.skipped} == {("escape.txt", "symlink"), ("inner.txt", "symlink"),
                                                    ("dirlink", "symlink"), ("pipe.txt", "not_regular_file")}
    assert c.listing() == ["ok.txt"]


def test_oversize_hidden_unsupported_and_excluded_files_are_left_out(share: Path) -> None:
    put(share / "big.txt", 0o644, text="x" * 100)
    put(share / "small.md", 0o644)
    put(share / ".hidden.txt", 0o644)
    put(share / "image.bin", 0o644)
    put(share / "drafts" / "d.txt", 0o644)
    c = PosixConnector("share", {"root": str(share), "max_file_bytes": 50, "exclude": ["drafts/*"]})
    assert c.listing() == ["small.md"]
    assert ("big.txt", "too_large") in {(s.rel, s.code) for s in c.skipped}


def test_permission_changes_without_content_changes(share: Path) -> None:
    """chmod, chown, setfacl on the file or a parent folder come from permissions(cp), not
    documents(cp): ctime alone would miss the folder."""
    d = share / "dept"
    d.mkdir()
    os.chmod(d, 0o755)
    f = put(d / "plan.txt", 0o600)
    c = lambda: PosixConnector("share", {"root": str(share)})  # noqa: E731
    _, dcp = drain(c().documents(None), None)
    _, pcp = drain(c().permissions(None), None)

    def step() -> list[str]:
        nonlocal pcp
        changes, pcp = drain(c().permissions(pcp), pcp)
        docs, _ = drain(c().documents(dcp), dcp)
        assert not docs, "a permission-only change came from documents(cp)"
        return [ch.doc_id for ch in changes]

    os.chown(f, uid(ALICE), gid(STAFF))
    assert step() == ["dept/plan.txt"]
    os.chmod(f, 0o640)
    assert step() == ["dept/plan.txt"]
    sh("setfacl", "-m", f"u:{BOB}:r", str(f))
    assert step() == ["dept/plan.txt"]
    assert step() == []
    os.chmod(d, 0o700)  # only the folder changes
    changes, pcp2 = drain(c().permissions(pcp), pcp)
    assert [ch.doc_id for ch in changes] == ["dept/plan.txt"]
    assert changes[0].acl.allow == frozenset()  # alice owns the file, root owns the folder: root lacks r
    del pcp2


def test_a_same_size_rewrite_in_the_same_tick_is_not_missed(share: Path) -> None:
    f = put(share / "f.txt", 0o644, text="aaaa")
    st = f.stat()
    c = lambda: PosixConnector("share", {"root": str(share)})  # noqa: E731
    _, cp = drain(c().documents(None), None)
    with open(f, "r+") as fh:  # same size, then the old mtime back: a write inside one clock tick
        fh.write("bbbb")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    docs, cp = drain(c().documents(cp), cp)
    assert [d.content for d in docs] == [b"bbbb"]


def test_a_file_moved_in_with_an_old_mtime_is_seen(share: Path, tmp_path: Path) -> None:
    put(share / "a.txt", 0o644)
    c = lambda: PosixConnector("share", {"root": str(share)})  # noqa: E731
    _, cp = drain(c().documents(None), None)
    old = put(tmp_path / "old.txt", 0o644, text="archived")
    os.utime(old, (1_000_000, 1_000_000))
    os.rename(old, share / "old.txt")
    docs, _ = drain(c().documents(cp), cp)
    assert [d.doc_id for d in docs] == ["old.txt"]


def test_config_errors() -> None:
    with pytest.raises(ConfigError):
        PosixConnector("s", {})
    with pytest.raises(ConfigError):
        PosixConnector("s", {"root": "/nonexistent/clearance"})
    with pytest.raises(ConfigError):
        PosixConnector("s", {"root": "/tmp", "world_readable": "everyone"})
    with pytest.raises(ConfigError):
        PosixConnector("s", {"root": "/tmp", "bogus": 1})
    with pytest.raises(ConfigError):
        PosixConnector("s", {"root": "/tmp"}).documents("not-a-checkpoint").__next__()


def test_getfacl_agrees_with_the_parsed_attribute(share: Path) -> None:
    """The xattr parser reads what getfacl prints (named entries and the mask)."""
    f = put(share / "f.txt", 0o640)
    sh("setfacl", "-m", f"u:{ALICE}:r,g:{ENG}:rw,m::r", str(f))
    out = subprocess.run(["getfacl", "-p", "-E", str(f)], capture_output=True, text=True, check=True).stdout
    assert f"user:{ALICE}:r--" in out and f"group:{ENG}:rw-" in out and "mask::r--" in out
    assert acls(share)["f.txt"].allow == {u("root"), g("root"), u(ALICE), g(ENG)}


def test_discovered_through_its_entry_point() -> None:
    from ingest.connectors.contract import load

    assert load("posix") is PosixConnector


# -- what the service account itself cannot read --------------------------------------------------
# These run the connector in a forked child that has dropped root for ALICE (setgid/setuid, no
# supplementary groups): the kernel then refuses opens exactly as it would for a non-root service
# account, which is how the connector is deployed. Root would read through every mode bit.


@pytest.fixture
def open_share() -> Iterator[Path]:
    """A share ALICE can reach (pytest's tmp_path lies under a 0700 folder of root's)."""
    root = Path(tempfile.mkdtemp(prefix="clr-posix-", dir="/tmp"))
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def as_alice_permissions(root: Path, since: str | None) -> tuple[list[PermissionChange], str | None, list[str], set[tuple[str, str]]]:
    def run() -> tuple[list[PermissionChange], str | None, list[str], set[tuple[str, str]]]:
        c = PosixConnector("share", {"root": str(root)})
        changes, cp = drain(c.permissions(since), since)
        skipped = {(s.rel, s.code) for s in c.skipped}
        return changes, cp, c.listing(), skipped

    return in_child(run, user=ALICE)


def test_a_file_the_service_account_can_no_longer_open_becomes_private(open_share: Path) -> None:
    """chmod go-r on a file with an ACL: the account cannot open it any more, so its old readers
    (group eng) must not survive; it is yielded private, stays listed, and its content is not read."""
    f = put(open_share / "secret.txt", 0o644)
    sh("setfacl", "-m", f"g:{ENG}:r", str(f))
    first, pcp, _, _ = as_alice_permissions(open_share, None)
    assert g(ENG) in first[0].acl.allow
    dcp = in_child(lambda: drain(PosixConnector("share", {"root": str(open_share)}).documents(None), None)[1], user=ALICE)

    sh("chmod", "go-r", str(f))
    changes, pcp, listing, skipped = as_alice_permissions(open_share, pcp)
    assert [(ch.doc_id, ch.acl) for ch in changes] == [("secret.txt", SourceAcl())]
    assert listing == ["secret.txt"] and ("secret.txt", "unreadable") in skipped
    assert as_alice_permissions(open_share, pcp)[0] == [], "the private ACL is checkpointed"
    docs = in_child(lambda: drain(PosixConnector("share", {"root": str(open_share)}).documents(dcp), dcp)[0], user=ALICE)
    assert docs == []

    os.chmod(f, 0o644)  # readable again: the real ACL comes back
    changes, pcp, _, _ = as_alice_permissions(open_share, pcp)
    assert [ch.doc_id for ch in changes] == ["secret.txt"] and g(ENG) in changes[0].acl.allow
    f.unlink()  # a file no longer seen is yielded private once (the engine skips unknown ones)
    changes, pcp, _, _ = as_alice_permissions(open_share, pcp)
    assert [(ch.doc_id, ch.acl) for ch in changes] == [("secret.txt", SourceAcl())]
    assert as_alice_permissions(open_share, pcp)[0] == []


def test_a_folder_the_service_account_may_not_open_makes_its_files_private(open_share: Path) -> None:
    """A folder chmod 700 by its (other) owner is an access change, not an outage: its files are
    yielded private and left out of the listing; the rest of the share is untouched."""
    eng = open_share / "eng"
    put(eng / "plan.txt", 0o644)
    os.chmod(eng, 0o755)
    put(open_share / "top.txt", 0o644)
    os.symlink(eng / "plan.txt", open_share / "plan-link.txt")  # once eng is 0700 its target cannot be examined
    first, pcp, listing, _ = as_alice_permissions(open_share, None)
    assert listing == ["top.txt", "eng/plan.txt"] and all(ch.acl.allow for ch in first)

    os.chmod(eng, 0o700)
    changes, pcp, listing, skipped = as_alice_permissions(open_share, pcp)
    assert [(ch.doc_id, ch.acl) for ch in changes] == [("eng/plan.txt", SourceAcl())]
    assert listing == ["top.txt"]
    assert ("eng", "folder_denied") in skipped and (".", "folder_denied") not in skipped


def test_any_other_folder_error_fails_the_run_naming_the_folder(share: Path) -> None:
    """A transient error on one subtree (here a real EMFILE: the child may open only a few more
    descriptors, and each folder level holds one) must fail the run, never yield a partial
    listing that the engine would reconcile into deletions."""
    deep = share / "a" / "a" / "a" / "a" / "a" / "a" / "a" / "a"
    put(deep / "f.txt", 0o644)
    put(share / "top.txt", 0o644)
    assert PosixConnector("share", {"root": str(share)}).listing() == ["top.txt", "a/a/a/a/a/a/a/a/f.txt"]
    with pytest.raises(ChildError, match=r"BackendUnavailableError: source share: cannot read folder '(a/?)+'.*EMFILE"):
        in_child(lambda: PosixConnector("share", {"root": str(share)}).listing(), max_fds=4)


def test_numeric_ids_name_every_account_by_number(share: Path) -> None:
    """For a mount whose server numbers accounts differently than this host's user database."""
    put(share / "f.txt", 0o640, uid(ALICE), gid(ENG))
    assert acls(share)["f.txt"].allow == {u(ALICE), g(ENG)}
    assert acls(share, numeric_ids=True)["f.txt"].allow == {u(f"uid:{uid(ALICE)}"), g(f"gid:{gid(ENG)}")}


def test_max_file_bytes_defaults_to_50_mib(share: Path) -> None:
    big = share / "big.txt"
    with open(big, "wb") as fh:  # sparse: instant, never read
        fh.truncate(DEFAULT_MAX_FILE_BYTES + 1)
    put(share / "small.txt", 0o644)
    c = PosixConnector("share", {"root": str(share)})
    assert c.max_file_bytes == DEFAULT_MAX_FILE_BYTES == 50 * 1024 * 1024
    docs, _ = drain(c.documents(None), None)
    assert [d.doc_id for d in docs] == ["small.txt"]
    assert ("big.txt", "too_large") in {(s.rel, s.code) for s in c.skipped}
    with pytest.raises(ConfigError):
        PosixConnector("share", {"root": str(share), "max_file_bytes": None})
    with pytest.raises(ConfigError, match="numeric_ids"):
        PosixConnector("share", {"root": str(share), "numeric_ids": "yes"})
