from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ConfigError
from core.types import Acl
from ingest.manifest import AclManifest
from tests.conftest import DEMO

MANIFEST = """
tenant = "acme"
[folders."."]
allow = ["tenant:acme"]
[folders."hr"]
allow = ["group:hr"]
deny = ["group:contractors"]
[folders."hr/cases"]
deny = ["user:mallory"]
[files."hr/cases/a.md"]
allow = ["user:bob"]
[files."hr/open.md"]
allow = ["tenant:acme"]
"""


@pytest.fixture
def manifest(tmp_path: Path) -> AclManifest:
    (tmp_path / "acl.toml").write_text(MANIFEST)
    return AclManifest.load(tmp_path)


def test_nearest_allow_wins_and_deny_accumulates(manifest: AclManifest) -> None:
    assert manifest.acl_for("readme.md") == Acl(frozenset({"tenant:acme"}))
    assert manifest.acl_for("hr/x.md") == Acl(frozenset({"group:hr"}), frozenset({"group:contractors"}))
    assert manifest.acl_for("hr/cases/b.md") == Acl(frozenset({"group:hr"}), frozenset({"group:contractors", "user:mallory"}))
    assert manifest.acl_for("hr/cases/a.md") == Acl(frozenset({"user:bob"}), frozenset({"group:contractors", "user:mallory"}))
    assert manifest.acl_for("hr/open.md").allow == frozenset({"tenant:acme"})


def test_uncovered_file_is_private(tmp_path: Path) -> None:
    (tmp_path / "acl.toml").write_text('[folders."public"]\nallow = ["tenant:acme"]\n')
    assert AclManifest.load(tmp_path).acl_for("secret/x.md") == Acl.private()
    assert AclManifest.load(tmp_path / "nowhere").acl_for("x.md") == Acl.private()


@pytest.mark.parametrize("bad", ['[folders."x"]\nallow = ["finance"]\n', '[folders."x"]\nallw = []\n', "nonsense = 1\n", "[[["])
def test_invalid_manifest_is_a_config_error(tmp_path: Path, bad: str) -> None:
    (tmp_path / "acl.toml").write_text(bad)
    with pytest.raises(ConfigError):
        AclManifest.load(tmp_path)


def test_demo_manifest_restricts_documents() -> None:
    m = AclManifest.load(DEMO)
    assert m.acl_for("finance/board-pack.html").deny == frozenset({"user:alice"})
    assert not m.acl_for("hr/salary-bands.xlsx").visible_to(frozenset({"user:alice", "group:finance", "tenant:acme"}))
    assert m.acl_for("company/it-faq.txt").visible_to(frozenset({"user:erin", "tenant:acme"}))
