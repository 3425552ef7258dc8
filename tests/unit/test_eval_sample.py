"""`clearance eval sample --from-audit`: production searches from the real audit trail (SQLite
catalog) into a query set, PII-scrubbed, deduplicated, stratified by principal set and source."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.audit import AuditEvent, SeenChunk
from core.errors import InvalidRequestError
from core.settings import AuditSettings
from eval.sample import compile_patterns, parse_since, sample_queries, scrub
from store.audit import AuditLog
from store.catalog import Catalog

NOW = datetime.now(UTC)


def _event(query: str, principals: set[str], source: str | None, *, status: int = 200,
           at: datetime | None = None) -> AuditEvent:
    chunks = (SeenChunk("c1", source, "d1", "v1", "acl"),) if source else ()
    return AuditEvent(at=at or NOW, request_id="r", action="search", status=status, issuer="i", subject="s",
                      tenant="acme", principals=frozenset(principals), query=query, params={}, chunks=chunks,
                      latency_ms=1.0)


def _audit(tmp: Path, raw: bool = True) -> tuple[Catalog, AuditLog]:
    catalog = Catalog(f"sqlite:///{tmp / 'catalog.sqlite3'}")
    return catalog, AuditLog(AuditSettings(store_raw_query=raw), catalog)


def test_scrub_default_patterns() -> None:
    p = compile_patterns()
    assert scrub("mail jane.doe@acme.example about  it", p) == "mail [EMAIL] about it"
    assert scrub("call +1 415 555 0100 now", p) == "call [PHONE] now"
    assert scrub("IBAN DE89 3704 0044 0532 0130 00 please", p) == "IBAN [IBAN] please"
    assert scrub("customer 12345678", p) == "customer [NUMBER]"
    assert scrub("holidays 2027-05-17 and L4 salary bands Q3", p) == "holidays 2027-05-17 and L4 salary bands Q3"
    custom = compile_patterns(["TICKET=INC-\\d+"])
    assert scrub("status of INC-2041", custom) == "status of [TICKET]"
    with pytest.raises(InvalidRequestError):
        compile_patterns(["no-equals-sign"])


def test_sample_from_the_audit_trail(tmp_path: Path) -> None:
    catalog, audit = _audit(tmp_path)
    try:
        fin, hr = {"user:alice", "group:finance"}, {"user:bob", "group:hr"}
        for q in ("Q3 forecast", "q3   FORECAST", "budget 2027", "board pack", "travel policy"):
            audit.record(_event(q, fin, "finance"))
        audit.record(_event("salary bands", hr, "hr"))
        audit.record(_event("who is jane.doe@acme.example", hr, None))
        audit.record(_event("failed one", hr, "hr", status=503))
        audit.record(_event("too old", hr, "hr", at=NOW - timedelta(days=3)))
        rows, stats = sample_queries(audit.export(since=NOW - timedelta(hours=1)), 3, seed=1)
    finally:
        catalog.close()
    assert stats == {"events": 8, "searches": 7, "without_text": 0, "unique": 6}
    # three strata (alice/finance, bob/hr, bob/none): one from each before a second from any
    assert len(rows) == 3 and {r["source"] for r in rows} == {"finance", "hr", "(none)"}
    assert any(r["query"] == "who is [EMAIL]" for r in rows)
    assert all("@" not in r["query"] for r in rows)
    again, _ = sample_queries(_replay(tmp_path), 3, seed=1)
    assert again == rows  # seeded
    everything, _ = sample_queries(_replay(tmp_path), 100, seed=1)
    forecast = [r for r in everything if r["query"].casefold() == "q3 forecast"]
    assert len(everything) == 6 and len(forecast) == 1 and forecast[0]["searches"] == 2


def _replay(tmp: Path) -> list[dict]:
    catalog, audit = _audit(tmp)
    try:
        return list(audit.export(since=NOW - timedelta(hours=1)))
    finally:
        catalog.close()


def test_cli_sample_and_the_raw_text_opt_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cli.main import app

    data = tmp_path / "var"
    data.mkdir()
    catalog = Catalog(f"sqlite:///{data / 'catalog.sqlite3'}")
    try:
        AuditLog(AuditSettings(store_raw_query=False), catalog).record(_event("hidden", {"user:a"}, "s"))
    finally:
        catalog.close()
    monkeypatch.setenv("CLEARANCE_STORAGE__DATA_DIR", str(data))
    out = tmp_path / "q.jsonl"
    res = CliRunner().invoke(app, ["eval", "sample", "--from-audit", "--since", "1h", "--n", "5", "--out", str(out)])
    assert res.exit_code == 2 and "store_raw_query" in res.output and not out.exists()
    catalog = Catalog(f"sqlite:///{data / 'catalog.sqlite3'}")
    try:
        AuditLog(AuditSettings(store_raw_query=True), catalog).record(_event("travel policy", {"user:a"}, "s"))
    finally:
        catalog.close()
    res = CliRunner().invoke(app, ["eval", "sample", "--from-audit", "--since", "1h", "--n", "5", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert [json.loads(line)["query"] for line in out.read_text().splitlines()] == ["travel policy"]


def test_since() -> None:
    assert parse_since("7d", NOW) == NOW - timedelta(days=7)
    assert parse_since("2026-11-01") == datetime(2026, 11, 1, tzinfo=UTC)
    with pytest.raises(InvalidRequestError):
        parse_since("yesterday")


def test_who_searched_matches_the_personas_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cli.main import app

    data = tmp_path / "var"
    data.mkdir()
    catalog = Catalog(f"sqlite:///{data / 'catalog.sqlite3'}")
    try:
        audit = AuditLog(AuditSettings(), catalog)
        for _ in range(3):
            audit.record(_event("q", {"user:alice", "group:finance", "tenant:acme"}, "demo"))
        audit.record(_event("q", {"user:zoe", "group:sales", "tenant:acme"}, "demo"))
    finally:
        catalog.close()
    monkeypatch.setenv("CLEARANCE_STORAGE__DATA_DIR", str(data))
    personas = Path(__file__).resolve().parents[2] / "eval" / "personas" / "demo.yaml"
    res = CliRunner().invoke(app, ["eval", "personas", "--from-audit", "--since", "1h", "--personas", str(personas), "--json"])
    assert res.exit_code == 0, res.output
    found = json.loads(res.output)
    assert [(e["persona"], e["searches"]) for e in found["principal_sets"]] == [("alice", 3), (None, 1)]
    assert found["covered_searches"] == 3 and found["searches"] == 4
    assert found["personas_without_searches"] == ["bob", "carol", "dave", "erin"]
