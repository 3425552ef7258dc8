"""The connector scheduler (``app.scheduler``): due streams at their own intervals, missed runs and
failures counted and surfaced (status, /metrics, /readyz as a non-fatal check), and on a real
PostgreSQL two scheduler instances never run the same source and stream at once.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from api.app import create_app
from app.connectors import ConnectorSync
from app.identity import IdentityMap
from app.scheduler import Scheduler
from app.services import Services, build_services
from app.sources import ConnectorSpec
from auth.local import operator_entitlements
from core.settings import IdentitySettings, SchedulerSettings
from store.catalog import Catalog, utcnow
from testkit.live_server import LiveServer
from tests.conftest import make_settings
from tests.contract.test_connector_example import example_module

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _pg_available() -> bool:
    try:
        with create_engine(PG_ADMIN).connect() as c:
            c.execute(text("select 1"))
        return True
    except Exception:
        return False


def notes(root: Path, n: int = 2) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"n{i}.txt").write_text(f"Note {i} about the revenue forecast.")
        (root / f"n{i}.acl").write_text("user alice\n")
    return root


def add(services: Services, name: str, connector: str, root: Path, content_s: int = 3600, perm_s: int = 60) -> None:
    services.sources.create(operator_entitlements(services.settings.ingest.tenant, "tester"), name, "connector",
                            ["user:etl"], None, local=True,
                            connector=ConnectorSpec(connector, {"root": str(root)}, content_s, perm_s))


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    s = build_services(make_settings(tmp_path, scheduler=SchedulerSettings(backoff_s=0.0, retries=0)))
    assert s.connectors is not None
    s.connectors.factories["notes"] = example_module().NotesConnector
    yield s
    s.close()


def test_streams_run_at_their_own_intervals_and_missed_runs_are_counted(services: Services, tmp_path: Path) -> None:
    add(services, "n", "notes", notes(tmp_path / "notes"), content_s=3600, perm_s=60)
    assert services.connectors is not None
    sched = Scheduler(services.connectors)
    first = sched.tick()
    assert sorted((r.stream, r.outcome) for r in first) == [("content", "ok"), ("permissions", "ok")]
    assert sched.tick() == [], "nothing is due right after a run"
    now = utcnow()
    due = {(d.stream, d.missed) for d in sched.due(now + timedelta(seconds=90))}
    assert due == {("permissions", False)}, "permissions run more often than content"
    late = {(d.stream, d.missed) for d in sched.due(now + timedelta(seconds=3600 + 60 + 3600 + 5))}
    assert late == {("content", True), ("permissions", True)}, "more than one interval late: missed"
    reports = sched.tick(now + timedelta(seconds=200))
    assert [(r.stream, r.outcome) for r in reports] == [("permissions", "ok")]
    st = services.connectors.status("n")["streams"]
    assert st["permissions"]["missed"] == 1 and st["permissions"]["runs"] == 2
    assert st["content"]["missed"] == 0 and st["content"]["runs"] == 1
    exposition = services.metrics.exposition().decode()
    assert 'clearance_connector_missed_runs_total{source="n",stream="permissions"} 1.0' in exposition
    assert 'clearance_connector_runs_total{outcome="ok",source="n",stream="content"} 1.0' in exposition


def test_a_failing_connector_is_reported_but_never_takes_the_server_out_of_rotation(services: Services,
                                                                                    tmp_path: Path) -> None:
    add(services, "good", "notes", notes(tmp_path / "good"))
    add(services, "gone", "notes", notes(tmp_path / "gone"))
    for p in (tmp_path / "gone").iterdir():
        p.unlink()
    (tmp_path / "gone").rmdir()  # the source's folder disappears: every run fails
    assert services.connectors is not None
    services.connectors.factories["notes"] = _Failing
    reports = {(r.source, r.stream): r.outcome for r in Scheduler(services.connectors).tick()}
    assert reports[("gone", "content")] == "failed" and reports[("good", "content")] == "failed"
    services.connectors.factories["notes"] = example_module().NotesConnector
    with LiveServer(create_app(services.settings, services)) as server:
        r = httpx.get(f"{server.url}/readyz")
        assert r.status_code == 200, "a failing connector must not make the process unready"
        body = r.json()
        assert body["status"] == "degraded"
        failing = {f["stream"] for f in body["checks"]["connectors"]["failing"]}
        assert {"gone/content", "good/content"} <= failing
        assert body["checks"]["connectors"]["fatal"] is False
        metrics = httpx.get(f"{server.url}/metrics").text
        assert 'clearance_connector_consecutive_failures{source="gone",stream="content"} 1.0' in metrics
    # The next successful run clears the good source's failure.
    report = services.connectors.run_content("good")
    assert report.outcome == "ok"
    assert services.connectors.status("good")["streams"]["content"]["consecutive_failures"] == 0


class _Failing:
    namespace = "notes"

    def __init__(self, name: str, config: dict[str, object]) -> None:
        self.name = name
        self.root = Path(str(config["root"]))

    def documents(self, since):  # type: ignore[no-untyped-def]
        raise FileNotFoundError(f"{self.root} is gone")

    def permissions(self, since):  # type: ignore[no-untyped-def]
        raise FileNotFoundError(f"{self.root} is gone")

    def listing(self) -> list[str]:
        return []

    def close(self) -> None:
        return None


# -- two schedulers on one PostgreSQL ------------------------------------------------------------


@pytest.fixture
def pg_url() -> Iterator[str]:
    if not _pg_available():
        pytest.skip("PostgreSQL at 127.0.0.1:5432 is not reachable")
    name = f"sched_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_two_schedulers_on_postgresql_never_sync_the_same_source_at_once(tmp_path: Path, pg_url: str) -> None:
    base = example_module().NotesConnector
    intervals: list[tuple[str, str, float, float]] = []
    lock = threading.Lock()

    def slow(stream: str):  # type: ignore[no-untyped-def]
        def wrap(self, since):  # type: ignore[no-untyped-def]
            t0 = time.monotonic()
            out = list(getattr(base, stream)(self, since))
            time.sleep(0.15)  # long enough for the other scheduler to try the same stream
            with lock:
                intervals.append((self.name, stream, t0, time.monotonic()))
            return iter(out)
        return wrap

    Slow = type("Slow", (base,), {"documents": slow("documents"), "permissions": slow("permissions")})
    settings = make_settings(tmp_path, database_url=pg_url, scheduler=SchedulerSettings(backoff_s=0.0))
    services = build_services(settings)
    other_catalog = Catalog(pg_url, auto_migrate=False)  # a second process: its own sessions
    try:
        assert services.connectors is not None
        services.connectors.factories["slow"] = Slow
        for i in range(3):
            add(services, f"s{i}", "slow", notes(tmp_path / f"s{i}"))
        other = ConnectorSync(settings, other_catalog, services.ingestor, IdentityMap(IdentitySettings()),
                              factories={"slow": Slow})
        a, b = Scheduler(services.connectors), Scheduler(other)
        # Deterministic half: while one holds a stream, the other skips it.
        with other.store.hold("s0", other.owner, 60) as got:
            assert got
            assert services.connectors.run_held("s0", "content", missed=False) is None
        ran: dict[str, int] = {"a": 0, "b": 0}
        far = utcnow() + timedelta(days=1)  # every stream is due on every tick

        def loop(name: str, sched: Scheduler) -> None:
            for _ in range(3):
                ran[name] += len(sched.tick(far))

        threads = [threading.Thread(target=loop, args=(n, s)) for n, s in (("a", a), ("b", b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert ran["a"] + ran["b"] > 0
        by_source: dict[str, list[tuple[float, float]]] = {}
        for source, _stream, t0, t1 in intervals:
            by_source.setdefault(source, []).append((t0, t1))
        for source, spans in by_source.items():
            spans.sort()
            for (_, end), (start, _) in zip(spans, spans[1:]):
                assert start >= end, f"source {source} was synced by two schedulers at once"
        # Each scheduler tried each of the 6 streams 3 times; the other one held some of them.
        assert len(intervals) == ran["a"] + ran["b"] < 2 * 3 * 6, "the schedulers contended (else this proves nothing)"
        assert ran["a"] > 0 and ran["b"] > 0
    finally:
        other_catalog.close()
        services.close()


def test_clearance_worker_runs_due_connector_syncs(tmp_path: Path) -> None:
    """`clearance worker --once`: one pass over the due connector streams, then the queue."""
    from typer.testing import CliRunner

    from cli.main import app

    root = tmp_path / "share"
    root.mkdir()
    (root / "acl.toml").write_text('[folders."."]\nallow = ["group:staff"]\n')
    (root / "a.txt").write_text("The revenue forecast.")
    env = {"CLEARANCE_STORAGE__DATA_DIR": str(tmp_path / "var"), "CLEARANCE_EMBEDDER__KIND": "hash"}
    runner = CliRunner()
    r = runner.invoke(app, ["sources", "add", "fs", "--connector", "filesystem", "--config", f'{{"root": "{root}"}}'],
                      env=env)
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["worker", "--once"], env=env)
    assert r.exit_code == 0 and "2 connector syncs (0 failed)" in r.output, r.output
    r = runner.invoke(app, ["worker", "--once"], env=env)
    assert r.exit_code == 0 and "0 connector syncs" in r.output, "nothing is due right after"
    r = runner.invoke(app, ["sources", "show", "fs", "--json"], env=env)
    import json

    streams = json.loads(r.output)["connector"]["streams"]
    assert streams["content"]["runs"] == 1 and streams["content"]["last_report"]["counts"] == {"added": 1}


def test_a_dropped_postgresql_lock_connection_is_noticed(pg_url: str) -> None:
    """The advisory lock lives on its own connection; when that connection dies the lock is gone,
    and ``renew`` says so (the engine then stops before saving a checkpoint)."""
    from store.connectors import ConnectorStore

    catalog = Catalog(pg_url)
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        store = ConnectorStore(catalog)
        with store.hold("src", "me", 60) as got:
            assert got and store.renew("src", "me", 60) is True
            assert store.renew("src", "someone-else", 60) is False
            with admin.connect() as c:  # the lock connection is killed (a server restart, a network cut)
                c.execute(text("SELECT pg_terminate_backend(l.pid) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                               "WHERE l.locktype = 'advisory' AND l.database = (SELECT oid FROM pg_database "
                               "WHERE datname = current_database()) AND a.datname = current_database() "
                               "AND l.pid <> pg_backend_pid()"))
            assert store.renew("src", "me", 60) is False
        with store.hold("src", "me", 60) as again:
            assert again, "the lock was released with its connection"
    finally:
        admin.dispose()
        catalog.engine.dispose()
