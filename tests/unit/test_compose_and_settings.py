"""docker-compose.yml parses, pins its images, guards secrets, and every CLEARANCE_* variable
it sets is a real setting (checked by building ``Settings`` from exactly those variables)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from core.settings import Settings
from tests.conftest import REPO

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SECRET_DEFAULTS = {"POSTGRES_PASSWORD": "pw", "QDRANT_API_KEY": "key", "CLEARANCE_OIDC_ISSUER": "https://idp.example/"}


def _interpolate(value: str) -> str:
    def sub(m: re.Match[str]) -> str:
        name, op, rest = m.group(1), m.group(2), m.group(3)
        if op == ":?":
            return SECRET_DEFAULTS[name]
        return rest if op == ":-" else ""
    return re.sub(r"\$\{([A-Z_]+)(:[?-])?([^}]*)\}", sub, value)


def test_services_images_and_health() -> None:
    services = COMPOSE["services"]
    assert {"api", "worker", "qdrant", "postgres"} <= set(services)
    for name in ("qdrant", "postgres"):
        image = services[name]["image"]
        assert ":" in image and not image.endswith(":latest"), image
        assert "healthcheck" in services[name]
    for name in ("api", "worker"):
        deps = services[name]["depends_on"]
        assert all(d["condition"] == "service_healthy" for d in deps.values())


def test_required_secrets_fail_fast() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    for secret in SECRET_DEFAULTS:
        assert f"${{{secret}:?" in text
    assert "password" not in re.sub(r"\$\{[^}]+\}", "", text).lower().replace("postgres_password", "")


@pytest.mark.parametrize("service", ["api", "worker"])
def test_every_env_var_is_a_real_setting(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {k: _interpolate(str(v)) for k, v in COMPOSE["services"][service]["environment"].items()}
    for key in list(__import__("os").environ):
        if key.startswith("CLEARANCE_"):
            monkeypatch.delenv(key)
    clearance_vars = {k: v for k, v in env.items() if k.startswith("CLEARANCE_")}
    assert clearance_vars
    for k, v in clearance_vars.items():
        monkeypatch.setenv(k, v)
    s = Settings()  # extra="forbid": an unknown variable would fail here
    assert s.qdrant.url == "http://qdrant:6333" and s.auth.mode == "oidc"
    assert s.auth.issuers[0].issuer == "https://idp.example/"
    assert s.catalog_url().startswith("postgresql+psycopg://")
    for k in clearance_vars:
        path = k.removeprefix("CLEARANCE_").lower().split("__")
        node: object = s
        for part in path:
            assert hasattr(node, part), f"{k} is not a setting"
            node = getattr(node, part)


def test_unknown_setting_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLEARANCE_QDRANT__URLL", "http://typo")
    with pytest.raises(ValidationError):
        Settings()


def test_config_show_masks_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from api.cli import app

    monkeypatch.setenv("CLEARANCE_QDRANT__API_KEY", "sup3r-secret")
    monkeypatch.setenv("CLEARANCE_DATABASE_URL", "postgresql+psycopg://u:pw-secret@h/db")
    out = CliRunner().invoke(app, ["config", "show"]).output
    assert "sup3r-secret" not in out and "pw-secret" not in out
    assert out.count("**********") == 2


def test_dev_mode_refuses_public_bind(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from api.cli import app

    monkeypatch.setenv("CLEARANCE_STORAGE__DATA_DIR", str(tmp_path))
    res = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"])
    assert res.exit_code == 2 and "dev_mode_exposed" in res.output


def test_unknown_top_level_variable_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLEARANCE_DATABSE_URL", "sqlite:///typo")
    with pytest.raises(ValidationError):
        Settings()
