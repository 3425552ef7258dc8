"""Parser workers cannot reach the network at the operating-system level (issue #16).

A real TCP listener and a real UDP "name server" on loopback count what reaches them. The same
probe (C-level ``_socket`` calls, beneath the Python-level guard, as native code would make them)
first runs in this process to show the listeners count, then in a worker under each isolation
available here: every lookup, connect and datagram fails there and nothing arrives. Without any
isolation the sandbox refuses to start unless ``ingest.allow_unisolated_parsing`` is set."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from core.errors import BackendUnavailableError
from core.settings import IngestSettings
from ingest.sandbox import ParserPool, available_isolation
from ingest.sandbox.child import _probe
from tests import fixtures_docs as docs

SETTINGS = IngestSettings(parse_workers=1)


class Listeners:
    """A TCP listener and a UDP socket on 127.0.0.1 that count connections and datagrams."""

    def __init__(self) -> None:
        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.connections = 0
        self.datagrams = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True),
                         threading.Thread(target=self._receive, daemon=True)]
        for t in self._threads:
            t.start()

    @property
    def ports(self) -> dict[str, int]:
        return {"port": self.tcp.getsockname()[1], "udp_port": self.udp.getsockname()[1]}

    def _accept(self) -> None:
        self.tcp.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def _receive(self) -> None:
        self.udp.settimeout(0.1)
        while not self._stop.is_set():
            try:
                self.udp.recvfrom(2048)
            except OSError:
                continue
            self.datagrams += 1

    def settle(self) -> tuple[int, int]:
        time.sleep(0.5)  # anything in flight arrives
        return self.connections, self.datagrams

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()
        self.tcp.close()
        self.udp.close()


@pytest.fixture
def listeners() -> Iterator[Listeners]:
    lst = Listeners()
    yield lst
    lst.close()


def test_control_the_probe_reaches_the_listeners_from_an_unisolated_process(listeners: Listeners) -> None:
    out = _probe({"host": "127.0.0.1", "name": "localhost", "timeout_s": 2, **listeners.ports})
    assert out["connect"] == "ok" and out["sendto"] == "ok" and out["getaddrinfo"] == "ok"
    assert listeners.settle() == (1, 1)


@pytest.mark.parametrize("method", ["netns", "seccomp"])
def test_worker_lookups_connects_and_datagrams_all_fail_and_nothing_arrives(method: str,
                                                                           listeners: Listeners) -> None:
    if available_isolation((method,)) != method:
        pytest.skip(f"{method} is not permitted on this machine")
    with ParserPool(SETTINGS, isolation_methods=(method,)) as pool:
        out = pool.probe_network(host="127.0.0.1", name="example.com", **listeners.ports)
        assert pool.isolation == method
        assert set(out) == {"getaddrinfo", "gethostbyname", "connect", "sendto"}
        assert all(v != "ok" for v in out.values()), out
        assert listeners.settle() == (0, 0)
        # and the worker still parses
        assert docs.SENTENCE in " ".join(e.text for e in pool.parse("policy.docx", docs.make_docx()))
        assert pool.network_attempts == 0


def test_no_isolation_refuses_to_start_unless_allowed() -> None:
    with ParserPool(SETTINGS, isolation_methods=()) as pool:
        assert pool.isolation == "none"
        started = time.monotonic()
        with pytest.raises(BackendUnavailableError) as err:
            pool.parse("a.txt", b"Some text.\n")
        assert err.value.code == "parser_unisolated"
        assert time.monotonic() - started < 5  # refused before the parser warm-up
        assert pool.template_pid is None
    allowed = SETTINGS.model_copy(update={"allow_unisolated_parsing": True})
    with ParserPool(allowed, isolation_methods=()) as pool:
        assert pool.parse("a.txt", b"Some text.\n")
        assert pool.isolation == "none"


def test_default_isolation_is_the_strongest_available() -> None:
    best = available_isolation()
    assert best in ("netns", "seccomp", "none")
    if available_isolation(("netns",)) == "netns":
        assert best == "netns"
