"""The parse sandbox: same elements as an in-process parse, no network, limits that kill the
worker (time, memory, death) yield their codes and the next parse gets a fresh worker; cheap
refusals never start one; per-file overhead stays small."""

from __future__ import annotations

import os
import signal
import statistics
import threading
import time
from collections.abc import Iterator

import pytest

from core.errors import IngestError
from core.settings import IngestSettings
from ingest.parse import parse
from ingest.sandbox import ParserPool, parse_isolated, shared_pool
from tests import fixtures_docs as docs

DEFAULT = IngestSettings()
# Small enough that a 20 MB file cannot be parsed; large enough for every benign test file.
LIMITED = IngestSettings(parse_memory_bytes=64 << 20, parse_worker_max_jobs=3)
SLOW_TXT = "\n\n".join(f"The committee reviewed budget line {i} and approved it." for i in range(3000)).encode()


@pytest.fixture(scope="module", autouse=True)
def limited_pool() -> Iterator[ParserPool]:
    pool = ParserPool(LIMITED)
    pool.warm(wait=False)  # both templates start while the first tests run
    shared_pool(DEFAULT).warm(wait=False)
    yield pool
    pool.close()


@pytest.mark.parametrize("name", sorted(docs.BENIGN))
def test_sandbox_gives_the_same_elements_as_in_process(name: str) -> None:
    data = docs.BENIGN[name]()
    assert parse_isolated(name, data, DEFAULT) == parse(name, data, DEFAULT)


def test_workers_made_no_network_attempt() -> None:
    pool = shared_pool(DEFAULT)
    parse_isolated("policy.md", docs.make_md(), DEFAULT)
    assert pool.network_attempts == 0


def test_cheap_refusals_do_not_start_a_worker() -> None:
    with ParserPool(DEFAULT) as pool:
        for name, data, code in [("a.exe", b"x", "unsupported_type"), ("a.txt", b"", "empty_file"),
                                 ("a.txt", b"x" * 2048, "too_large")]:
            with pytest.raises(IngestError) as err:
                pool.parse(name, data, IngestSettings(max_file_bytes=1024))
            assert err.value.code == code
        assert pool.pids == []


def test_limits_kill_the_worker_and_the_next_parse_gets_a_fresh_one(limited_pool: ParserPool) -> None:
    limited_pool.warm()
    first = limited_pool.pids

    # 1. wall-clock limit: a document that classifies for ~15 s, with a 1 s budget
    started = time.monotonic()
    with pytest.raises(IngestError) as err:
        # unstructured's per-paragraph classifier is what makes it slow (the heuristic is instant)
        limited_pool.parse("slow.txt", SLOW_TXT, LIMITED.model_copy(update={"parse_timeout_s": 1.0,
                                                                            "plain_text_elements": "unstructured"}))
    assert err.value.code == "parse_timeout"
    assert time.monotonic() - started < 3
    assert limited_pool.pids == []  # killed, not left running

    # 2. memory limit, on a fresh worker: a 20 MB line needs several copies of itself
    with pytest.raises(IngestError) as err:
        limited_pool.parse("huge.txt", docs.huge_line_txt(20 << 20))
    assert err.value.code == "memory_limit"
    assert limited_pool.pids == []  # it left; its heap is not reused

    # 3. the worker dies mid-parse (what an OOM kill or a native crash looks like)
    limited_pool.warm()
    victim = limited_pool.pids[0]
    killer = threading.Timer(1.0, os.kill, (victim, signal.SIGKILL))
    killer.start()
    with pytest.raises(IngestError) as err:
        limited_pool.parse("slow.txt", SLOW_TXT, LIMITED.model_copy(update={"plain_text_elements": "unstructured"}))
    killer.join()
    assert err.value.code == "parse_killed"
    assert "SIGKILL" in err.value.message

    # 4. and the next parse works
    assert docs.SENTENCE in " ".join(e.text for e in limited_pool.parse("policy.docx", docs.make_docx()))
    assert limited_pool.pids and limited_pool.pids != first


def test_worker_address_space_is_capped(limited_pool: ParserPool) -> None:
    limited_pool.warm()
    worker = limited_pool._workers[0]
    with open(f"/proc/{worker.pid}/limits") as f:
        line = next(row for row in f if row.startswith("Max address space"))
    assert int(line.split()[3]) == worker.address_space_limit


def test_worker_is_replaced_after_max_jobs(limited_pool: ParserPool) -> None:
    seen = set()
    for _ in range(LIMITED.parse_worker_max_jobs + 1):
        limited_pool.parse("a.csv", docs.make_csv())
        seen.update(limited_pool.pids)
        if not limited_pool.pids:
            break
    assert limited_pool.pids == []  # stopped after its last allowed job
    limited_pool.parse("a.csv", docs.make_csv())
    assert limited_pool.pids and limited_pool.pids[0] not in seen


def test_a_dead_template_is_replaced_and_takes_its_workers_along(limited_pool: ParserPool) -> None:
    limited_pool.warm()
    template, worker = limited_pool.template_pid, limited_pool.pids[0]
    assert template is not None
    os.kill(template, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(worker)  # no orphaned worker keeps running
    with pytest.raises(IngestError) as err:  # the call that finds its worker gone
        limited_pool.parse("a.csv", docs.make_csv())
    assert err.value.code == "parse_killed"
    assert limited_pool.parse("a.csv", docs.make_csv())
    assert limited_pool.template_pid not in (None, template)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_per_file_overhead_is_small() -> None:
    """Median wall time of a warm sandboxed parse minus the in-process parse of the same file."""
    pool = shared_pool(DEFAULT)
    pool.warm()
    report = {}
    for name, data in [("small.txt", docs.make_txt()), ("policy.docx", docs.make_docx())]:
        parse(name, data, DEFAULT)
        parse_isolated(name, data, DEFAULT)
        inside, isolated = [], []
        for _ in range(15):
            t = time.perf_counter()
            parse(name, data, DEFAULT)
            inside.append(time.perf_counter() - t)
            t = time.perf_counter()
            parse_isolated(name, data, DEFAULT)
            isolated.append(time.perf_counter() - t)
        report[name] = (statistics.median(isolated) - statistics.median(inside)) * 1000
    print(f"sandbox overhead per file (ms): {report}")
    assert all(ms < 50 for ms in report.values()), report
