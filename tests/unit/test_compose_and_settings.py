"""Settings from the environment: unknown variables are errors, secrets are masked, dev mode
stays on loopback. The compose file's own checks are in tests/unit/test_deploy.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from core.settings import Settings


def test_unknown_setting_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLEARANCE_QDRANT__URLL", "http://typo")
    with pytest.raises(ValidationError):
        Settings()


def test_config_show_masks_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    monkeypatch.setenv("CLEARANCE_QDRANT__API_KEY", "sup3r-secret")
    monkeypatch.setenv("CLEARANCE_DATABASE_URL", "postgresql+psycopg://u:pw-secret@h/db")
    out = CliRunner().invoke(app, ["config", "show"]).output
    assert "sup3r-secret" not in out and "pw-secret" not in out
    assert out.count("**********") == 2


def test_dev_mode_refuses_public_bind(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    monkeypatch.setenv("CLEARANCE_STORAGE__DATA_DIR", str(tmp_path))
    res = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"])
    assert res.exit_code == 2 and "dev_mode_exposed" in res.output


def test_unknown_top_level_variable_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLEARANCE_DATABSE_URL", "sqlite:///typo")
    with pytest.raises(ValidationError):
        Settings()


def test_leg_weights_default_per_fusion_and_never_both_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    from core.settings import FUSION_WEIGHTS, RetrievalSettings

    assert RetrievalSettings().fusion == "relative" and RetrievalSettings().leg_weights() == FUSION_WEIGHTS["relative"]
    assert RetrievalSettings(fusion="rrf").leg_weights() == (1.0, 1.0)
    assert RetrievalSettings(fusion="rrf", bm25_weight=2.0).leg_weights() == (1.0, 2.0)  # a set weight is kept
    with pytest.raises(ValidationError, match="both 0"):
        RetrievalSettings(dense_weight=0, bm25_weight=0)
    monkeypatch.setenv("CLEARANCE_RETRIEVAL__FUSION", "rff")  # a typo is an error, not a silent default
    with pytest.raises(ValidationError, match="fusion"):
        Settings()


def test_eval_rrf_k_without_rrf_fusion_is_a_usage_error(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    res = CliRunner().invoke(app, ["eval", "run", "--dataset", str(tmp_path), "--rrf-k", "1"])
    assert res.exit_code == 2 and "--rrf-k applies to RRF fusion: add --fusion rrf" in res.output
    res = CliRunner().invoke(app, ["eval", "run", "--dataset", str(tmp_path), "--fusion", "borda"])
    assert res.exit_code == 2 and "fusion" in res.output


def test_hnsw_ef_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from core.settings import RetrievalSettings

    assert RetrievalSettings().hnsw_ef == 200  # measured (BENCHMARKS.md)
    assert RetrievalSettings(hnsw_ef=None).hnsw_ef is None  # the engine's own
    for bad in (0, -1, 5000):
        with pytest.raises(ValidationError, match="hnsw_ef"):
            RetrievalSettings(hnsw_ef=bad)
    monkeypatch.setenv("CLEARANCE_RETRIEVAL__HNSW_EF", "256")
    assert Settings().retrieval.hnsw_ef == 256
