"""Parsing makes no network call: every way out through Python's socket module is replaced by a
recorder that raises, then one file of every format is parsed in this process (no sandbox, whose
own guard would hide an attempt). If this module is the first to import unstructured, its import
runs under the guard too."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator

import pytest

from ingest.parse import parse
from tests import fixtures_docs as docs


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    attempts: list[str] = []

    def refuse(name: str):  # type: ignore[no-untyped-def]
        def call(*args: object, **kwargs: object) -> object:
            attempts.append(f"{name}{args[1:] if name.startswith('socket.') else args}")
            raise OSError(f"network disabled in this test ({name})")
        return call

    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
    monkeypatch.setattr(socket.socket, "sendto", refuse("socket.sendto"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.setattr(socket, "gethostbyname", refuse("gethostbyname"))
    yield attempts


def test_every_format_parses_with_zero_network_attempts(no_network: list[str]) -> None:
    outcomes = {}
    for name, make in docs.BENIGN.items():
        outcomes[name] = len(parse(name, make()))
    assert no_network == []
    assert all(n > 0 for n in outcomes.values()), outcomes
    assert os.environ["DO_NOT_TRACK"] == "1"  # set by parse before unstructured is imported


def test_the_guard_would_see_an_attempt(no_network: list[str]) -> None:
    with pytest.raises(OSError):
        socket.create_connection(("example.com", 443), timeout=1)
    assert no_network == ["create_connection(('example.com', 443),)"]


def test_control_unstructured_does_call_home_without_the_opt_out(no_network: list[str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Shows the first test can fail: without DO_NOT_TRACK, unstructured's telemetry reaches
    for packages.unstructured.io and the guard records it."""
    import time

    from unstructured.partition.text import partition_text

    monkeypatch.delenv("DO_NOT_TRACK", raising=False)
    monkeypatch.delenv("SCARF_NO_ANALYTICS", raising=False)
    monkeypatch.setenv("UNSTRUCTURED_DISABLE_NOTICE", "1")
    partition_text(text="A sentence that is classified.")
    deadline = time.monotonic() + 5
    while not no_network and time.monotonic() < deadline:  # delivery may run on a thread
        time.sleep(0.05)
    for thread in threading.enumerate():  # let it finish while the guard is still in place
        if thread.name == "unstructured-telemetry":
            thread.join(timeout=5)
    assert any("unstructured.io" in a for a in no_network), no_network
