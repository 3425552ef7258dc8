"""Shared fixtures. Real components throughout: Qdrant Edge on disk, SQLite/PostgreSQL, the
packaged MiniLM model. The hash embedder is used only where the test is about something else.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from core.settings import EmbedderSettings, Settings, StorageSettings  # noqa: E402
from testkit.log_hygiene import LeakScanner  # noqa: E402

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


# -- log hygiene over the whole run -----------------------------------------------------------
# Every record any test makes the code emit is scanned for token-shaped text; the run fails at
# the end if one held any (testkit/log_hygiene.py says what counts). Attached at configure time
# so records from imports and module fixtures are covered too; core.logging.configure leaves
# foreign handlers in place.
_LOG_SCANNER: LeakScanner | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _LOG_SCANNER
    _LOG_SCANNER = LeakScanner()
    logging.getLogger().addHandler(_LOG_SCANNER)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    scanner = _LOG_SCANNER
    if scanner is None:
        return
    logging.getLogger().removeHandler(scanner)
    if scanner.leaks:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = [f"log hygiene: {len(scanner.leaks)} of {scanner.scanned} log records hold token-shaped text:"]
        lines += [f"  {leak.describe()}" for leak in scanner.leaks[:50]]
        if reporter is not None:
            reporter.write_sep("=", "log hygiene", red=True, bold=True)
            reporter.write_line("\n".join(lines), red=True)
        else:
            print("\n".join(lines))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture(scope="session")
def minilm():
    """The production encoder (ONNX Runtime by default); the torch reference is in test_onnx_embedder."""
    from retrieval.embedder import build_embedder

    return build_embedder(EmbedderSettings())


from testkit.live_server import LiveServer, free_port  # noqa: E402, F401  (shared with the battery; free_port re-exported)


@pytest.fixture
def live_server_factory() -> Iterator[type[LiveServer]]:
    yield LiveServer
