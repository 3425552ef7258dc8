"""Configuration mistakes are one line per problem, naming the variable (or file) and the form
it expects, exit code 2 and no traceback: through the real `clearance` entry point, in a
subprocess, as an operator would meet them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.settings import InvalidSettingsError, environment_problems, load_settings

RUN = "from cli.main import run; run()"


def clearance(args: list[str], env: dict[str, str], tmp_path: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CLEARANCE_")}
    base.update({"CLEARANCE_STORAGE__DATA_DIR": str(tmp_path / "var"), **env})
    return subprocess.run([sys.executable, "-c", RUN, *args], env=base, capture_output=True, text=True,
                          timeout=timeout, cwd=Path(__file__).resolve().parents[2])


def error_lines(res: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in res.stderr, res.stderr
    return [line for line in res.stderr.splitlines() if line.startswith("error [")]


def test_a_misspelt_variable_is_one_line_naming_it(tmp_path: Path) -> None:
    res = clearance(["config", "show"], {"CLEARANCE_QDRANT__URLL": "http://qdrant:6333"}, tmp_path)
    assert res.returncode == 2
    assert error_lines(res) == ["error [config_invalid]: CLEARANCE_QDRANT__URLL is not a setting "
                                "(did you mean CLEARANCE_QDRANT__URL?)"]
    assert res.stderr.strip().count("\n") == 0 and res.stdout == ""


def test_every_problem_gets_its_own_line(tmp_path: Path) -> None:
    env = {
        "CLEARANCE_DATABSE_URL": "sqlite:///x",  # misspelt section-level name
        "CLEARANCE_SERVER__PORT": "eighty",  # not an integer
        "CLEARANCE_AUTH__MODE": "saml",  # not one of the choices
        "CLEARANCE_AUTH__ISSUERS": "[{'issuer': 'x'}]",  # not JSON
        "CLEARANCE_INGEST__CONTRACTS": '{"wiki": {"types": {"year": "nope"}}}',  # the contracts setting
        "CLEARANCE_RETRIEVAL__RERANK_DEPTH": "0",  # out of range
    }
    res = clearance(["status"], env, tmp_path)
    assert res.returncode == 2
    lines = error_lines(res)
    contract = [ln for ln in lines if "CONTRACTS" in ln]
    assert len(contract) == 1 and contract[0].startswith(
        "error [config_invalid]: CLEARANCE_INGEST__CONTRACTS.wiki.types.year: expected 'str', 'int'") \
        and contract[0].endswith(", got 'nope'"), contract
    assert sorted(set(lines) - set(contract)) == sorted([
        "error [config_invalid]: CLEARANCE_DATABSE_URL is not a setting (did you mean CLEARANCE_DATABASE_URL?)",
        "error [config_invalid]: CLEARANCE_SERVER__PORT: expected an integer, got 'eighty'",
        "error [config_invalid]: CLEARANCE_AUTH__MODE: expected 'dev' or 'oidc', got 'saml'",
        "error [config_invalid]: CLEARANCE_AUTH__ISSUERS: expected a JSON list, got invalid JSON "
        "(Expecting property name enclosed in double quotes: line 1 column 3 (char 2))",
        "error [config_invalid]: CLEARANCE_RETRIEVAL__RERANK_DEPTH: expected a number >= 1, got '0'",
    ]), lines


def test_problems_inside_a_json_value_name_the_path_and_hide_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in [k for k in os.environ if k.startswith("CLEARANCE_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("CLEARANCE_AUTH__ISSUERS", '[{"issuer": "https://idp/", "algorithms": ["HS256"], "tenantt": "acme"}]')
    monkeypatch.setenv("CLEARANCE_QDRANT__API_KEY", "x" * 10)
    monkeypatch.setenv("CLEARANCE_INGEST__SOURCE_SLA_S__WIKI", "-5")
    with pytest.raises(InvalidSettingsError) as err:
        load_settings()
    assert sorted(err.value.problems) == sorted([
        "CLEARANCE_AUTH__ISSUERS[0].algorithms: only asymmetric algorithms are accepted, got ['HS256']",
        "CLEARANCE_AUTH__ISSUERS[0].tenantt is not a setting (did you mean tenant?)",
        "CLEARANCE_INGEST__SOURCE_SLA_S__WIKI: expected a number > 0, got '-5'",
    ])
    monkeypatch.setenv("CLEARANCE_DATABASE_URL", '{"user": "pw-secret"}')
    assert not any("pw-secret" in line for line in environment_problems(dict(os.environ)))


def test_valid_settings_load(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in [k for k in os.environ if k.startswith("CLEARANCE_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("CLEARANCE_RETRIEVAL__SOURCE_MAX_AGE_S__WIKI", "3600")
    monkeypatch.setenv("CLEARANCE_TOKEN", "not-a-setting-but-read-by-the-cli")
    assert load_settings().retrieval.source_max_age_s == {"wiki": 3600}


def test_the_exact_search_bound_is_a_count_never_negative(monkeypatch: pytest.MonkeyPatch) -> None:
    """0 means never exact, a value at least the index's size means always (recall-first); a
    negative one is a typo that would silently mean "never", so it is refused."""
    for k in [k for k in os.environ if k.startswith("CLEARANCE_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("CLEARANCE_RETRIEVAL__EXACT_BELOW_POINTS", "-100000")
    with pytest.raises(InvalidSettingsError) as err:
        load_settings()
    assert err.value.problems == ["CLEARANCE_RETRIEVAL__EXACT_BELOW_POINTS: expected a number >= 0, got '-100000'"]
    monkeypatch.setenv("CLEARANCE_RETRIEVAL__EXACT_BELOW_POINTS", "100000")
    assert load_settings().retrieval.exact_below_points == 100_000


def test_a_broken_acl_toml_is_one_line_per_problem(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("# A\n\nText.\n")
    (folder / "acl.toml").write_text('tenant = "acme"\nowner = "me"\n[folders."."]\nallow = ["grp:finance"]\n')
    res = clearance(["ingest", str(folder)], {"CLEARANCE_EMBEDDER__KIND": "hash"}, tmp_path, timeout=300)
    assert res.returncode == 2, res.stderr
    lines = error_lines(res)
    assert len(lines) >= 3 and all(line.startswith("error [manifest_invalid]: ") for line in lines), lines
    assert "acl.toml" in lines[0]
    assert any("owner" in line for line in lines[1:]) and any("grp:finance" in line for line in lines[1:]), lines


def test_toml_syntax_error_is_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("# A\n\nText.\n")
    (folder / "acl.toml").write_text('[folders."."\nallow = ["group:x"]\n')
    res = clearance(["ingest", str(folder)], {"CLEARANCE_EMBEDDER__KIND": "hash"}, tmp_path, timeout=300)
    assert res.returncode == 2, res.stderr
    lines = error_lines(res)
    assert any("TOML" in line for line in lines) and all("manifest_invalid" in line for line in lines), lines
