"""The CLI finds its server: ``clearance serve`` (a real subprocess) records its address and dev
issuer in the data dir; ``token`` mints with that issuer, ``ingest`` hands the folder to that
server on its port (dev mode, loopback: the root the operator registered locally is readable);
a second ``serve`` on the same data dir fails at once with one line naming the owner; the
record is gone after the server exits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from cli.runtime import SERVER_FILE, running_server
from testkit.live_server import free_port
from tests.conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {**os.environ, "CLEARANCE_STORAGE__DATA_DIR": str(tmp_path / "var"), "CLEARANCE_EMBEDDER__KIND": "hash"}
    for k in ("CLEARANCE_STORAGE__DATA_DIR", "CLEARANCE_EMBEDDER__KIND"):
        monkeypatch.setenv(k, env[k])
    return env


def _serve(env: dict[str, str], port: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--port", str(port)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def server(cli_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    from cli.main import app

    share = tmp_path / "share"
    share.mkdir()
    (share / "acl.toml").write_text('[folders."."]\nallow = ["tenant:acme"]\n')
    (share / "memo.txt").write_text("Company memo about travel expenses.")
    res = CliRunner().invoke(app, ["ingest", str(share), "--source", "share"])  # local: registers the source
    assert res.exit_code == 0, res.output
    port = free_port()
    proc = _serve(cli_env, port)
    deadline = time.time() + 120
    while running_server(tmp_path / "var") is None or not _healthy(port):
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.time() < deadline, "server did not start"
        time.sleep(0.2)
    yield proc, port
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_cli_finds_its_server_and_a_second_serve_fails_in_one_line(server: tuple[subprocess.Popen[str], int],
                                                                   cli_env: dict[str, str], tmp_path: Path) -> None:
    from cli.main import app

    proc, port = server
    data = tmp_path / "var"
    record = json.loads((data / SERVER_FILE).read_text())
    assert record["pid"] == proc.pid and record["url"] == f"http://127.0.0.1:{port}"
    assert record["dev_issuer"] == f"http://127.0.0.1:{port}/dev-issuer"

    runner = CliRunner()
    token = runner.invoke(app, ["token", "--sub", "erin"]).stdout.strip()
    who = httpx.get(f"http://127.0.0.1:{port}/v1/whoami", headers={"authorization": f"Bearer {token}"})
    assert who.status_code == 200 and who.json()["issuer"] == record["dev_issuer"]
    disco = httpx.get(f"http://127.0.0.1:{port}/dev-issuer/.well-known/openid-configuration").json()
    assert disco["issuer"] == record["dev_issuer"]

    (tmp_path / "share" / "travel.md").write_text("# Travel\n\nBook travel through the portal.\n")
    res = runner.invoke(app, ["ingest", str(tmp_path / "share"), "--source", "share", "--json"])
    assert res.exit_code == 0, res.output
    assert f"server at http://127.0.0.1:{port}" in res.stderr
    assert json.loads(res.stdout)["counts"] == {"added": 1, "unchanged": 1}

    second = subprocess.run([sys.executable, "-m", "cli.main", "serve", "--port", str(free_port())], cwd=REPO,
                            env=cli_env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error [server_running]:") and f"pid {proc.pid}" in lines[0]

    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    assert not (data / SERVER_FILE).exists() and running_server(data) is None
