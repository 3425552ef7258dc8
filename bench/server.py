"""A real ``clearance serve`` in a subprocess on loopback over a bench data dir (tenant ``bench``):
shared by the end-to-end benchmark and the battery's load and restart checks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from core.settings import AuthSettings


def start_server(data_dir: Path, port: int, timeout_s: float = 180, env: dict[str, str] | None = None) -> subprocess.Popen:
    env = {**os.environ, **(env or {}), "CLEARANCE_STORAGE__DATA_DIR": str(data_dir), "CLEARANCE_AUTH__DEV_TENANT": "bench",
           "CLEARANCE_INGEST__TENANT": "bench", "CLEARANCE_LOG_LEVEL": "WARNING",
           # Pinned, so tokens minted offline (battery.loadgen.tokens) name the issuer the server
           # trusts; otherwise `serve` names its dev issuer after the address it binds.
           "CLEARANCE_AUTH__DEV_ISSUER": AuthSettings().dev_issuer}
    proc = subprocess.Popen([sys.executable, "-c", "from cli.main import run; run()", "serve", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.time()
    while time.time() - t0 < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read().decode()[-2000:] if proc.stderr else "server died")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start")


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None
