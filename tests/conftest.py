"""Shared fixtures. Real components throughout: Qdrant Edge on disk, SQLite/PostgreSQL, the
packaged MiniLM model. The hash embedder is used only where the test is about something else.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from core.settings import EmbedderSettings, Settings, StorageSettings  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "demo"
SHARED = REPO.parent / "shared"
DATASETS = SHARED / "datasets"


def make_settings(tmp: Path, **overrides: object) -> Settings:
    base: dict[str, object] = {
        "storage": StorageSettings(data_dir=tmp / "var"),
        "embedder": EmbedderSettings(kind="hash"),
    }
    base.update(overrides)
    return Settings(**base)  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture(scope="session")
def minilm():
    from retrieval.embedder import MiniLmEmbedder

    return MiniLmEmbedder(EmbedderSettings())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """The real ASGI app behind uvicorn on a loopback port, in a thread."""

    def __init__(self, app: object) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None, access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture
def live_server_factory() -> Iterator[type[LiveServer]]:
    yield LiveServer
