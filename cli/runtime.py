"""Where the running server is: ``clearance serve`` records its address in the data dir, and the
other commands read it instead of assuming port 8000.

``<data_dir>/server.lock`` is held with ``flock`` for as long as ``serve`` runs, so a second
``serve`` on the same data dir fails at once (one line naming the owner) instead of deep inside
the index's own lock, and a record left by a killed server is recognised as stale (its lock is
free). ``<data_dir>/server.json`` holds the pid, the URL to reach it and the dev issuer it
serves; it is removed on exit.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from core.errors import ClearanceError

SERVER_FILE = "server.json"
LOCK_FILE = "server.lock"


@dataclass(frozen=True)
class ServerRecord:
    pid: int
    url: str
    host: str
    port: int
    dev_issuer: str | None
    started_at: float

    def describe(self) -> str:
        return f"pid {self.pid}, {self.url}"


def url_for(host: str, port: int) -> str:
    """The URL a local client reaches a server bound to ``host`` with."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _read(data_dir: Path) -> ServerRecord | None:
    try:
        raw = json.loads((data_dir / SERVER_FILE).read_text("utf-8"))
        return ServerRecord(**{k: raw[k] for k in ServerRecord.__dataclass_fields__})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _locked(data_dir: Path) -> bool:
    """Whether some process holds the server lock of ``data_dir``."""
    path = data_dir / LOCK_FILE
    if not path.exists():
        return False
    with path.open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def running_server(data_dir: Path) -> ServerRecord | None:
    """The server that owns ``data_dir`` now, or None (none, or a stale record)."""
    if not _locked(data_dir):
        return None
    return _read(data_dir)


class ServerLock:
    """Held by ``clearance serve`` for its whole life."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._fh: IO[str] | None = None

    def acquire(self, host: str, port: int, dev_issuer: str | None) -> ServerRecord:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fh = (self.data_dir / LOCK_FILE).open("a")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            owner = _read(self.data_dir)
            who = f" ({owner.describe()})" if owner else ""
            raise ClearanceError(f"another clearance server{who} already serves the data dir {self.data_dir}; "
                                 "stop it first, or use another CLEARANCE_STORAGE__DATA_DIR", code="server_running") from None
        self._fh = fh
        record = ServerRecord(pid=os.getpid(), url=url_for(host, port), host=host, port=port, dev_issuer=dev_issuer,
                              started_at=time.time())
        tmp = self.data_dir / f".{SERVER_FILE}.{os.getpid()}"
        tmp.write_text(json.dumps(asdict(record), indent=1), "utf-8")
        os.replace(tmp, self.data_dir / SERVER_FILE)
        return record

    def release(self) -> None:
        if self._fh is None:
            return
        try:
            rec = _read(self.data_dir)
            if rec is not None and rec.pid == os.getpid():
                (self.data_dir / SERVER_FILE).unlink(missing_ok=True)
        finally:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
