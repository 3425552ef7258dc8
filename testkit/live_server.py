"""The real ASGI app behind uvicorn on a free loopback port, in a thread: for the battery and the
tests alike (``tests.conftest`` re-exports it)."""

from __future__ import annotations

import socket
import threading
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    def __init__(self, app: object, start_timeout_s: float = 60, port: int | None = None) -> None:
        import uvicorn

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None, access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self._timeout = start_timeout_s

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.time() + self._timeout
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
