"""Fast version of the crash battery (``python -m battery.crash``): one real ingestion process
killed with SIGKILL at each phase boundary (and once more inside recover()), resumed, and
checked against the catalog, the tree and a clean ingest; plus the push path after a crash."""

from __future__ import annotations

import multiprocessing
import os
from datetime import UTC, datetime
from pathlib import Path

from app.services import build_services
from battery.crash import CRASH_PHASES, CrashConfig, all_points, run_battery
from core.settings import IngestSettings
from core.types import Acl, SourceDocument
from tests.conftest import make_settings


def test_a_kill_at_every_phase_loses_duplicates_and_orphans_nothing(tmp_path: Path) -> None:
    result = run_battery(CrashConfig(
        docs=12, seed=7, schedule=list(CRASH_PHASES), subprocess_every=0, reference_every=0,
        p_recover_kill=1.0, p_acl_revert=1.0, p_change_while_down=0.0, minimal_mutations=True,
        work_dir=tmp_path / "crash", log=lambda _line: None))
    f = result["figures"]
    assert result["passed"], result["violations"]
    assert all(f["kills_by_phase"][p] >= 1 for p in CRASH_PHASES), f["kills_by_phase"]
    assert f["kills_by_phase"]["recover"] >= 1  # a second crash during recovery
    assert f["acl_reverted_while_down"] >= 1  # the ACL written to the index, then reverted at the source
    for figure in ("lost", "duplicated", "orphaned", "acl_mismatches", "stale_payloads", "rows_left_writing",
                   "source_mismatches", "resume_errors", "process_failures", "reference_mismatches"):
        assert f[figure] == 0, (figure, result["violations"])
    assert f["chunks_checked"] > 0 and f["reference_checks"] >= 1


def _doc(doc_id: str, paragraphs: int) -> SourceDocument:
    text = "\n\n".join(f"Paragraph {i} of the revenue forecast for the board meeting." for i in range(paragraphs))
    return SourceDocument("push", doc_id, f"push://{doc_id}", f"{doc_id}.txt", text.encode(),
                          Acl(frozenset({"group:finance"})), datetime(2026, 1, 1, tzinfo=UTC))


def _settings(tmp_path: Path):  # noqa: ANN202
    return make_settings(tmp_path, ingest=IngestSettings(chunk_chars=100, chunk_overlap_chars=0, min_chunk_chars=0))


def _push_and_die(tmp: str) -> None:
    """Forkserver child: push 8 chunks of two documents and die right after the index upsert."""
    os.environ["CLEARANCE_CRASH_AT"] = "index_upsert:1"
    build_services(_settings(Path(tmp))).ingestor.apply_many([_doc("a", 8), _doc("b", 8)])


def test_a_push_killed_mid_write_leaves_no_orphans_for_a_later_push_or_delete(tmp_path: Path) -> None:
    """The push and worker paths never run recover(): a later write or delete of a row left
    ``writing`` must remove what the dead write put in the index beyond the row's ids."""
    services = build_services(_settings(tmp_path))
    assert [r[0] for r in services.ingestor.apply_many([_doc("a", 3), _doc("b", 3)])] == ["added", "added"]
    services.close()
    child = multiprocessing.get_context("forkserver").Process(target=_push_and_die, args=(str(tmp_path),))
    child.start()
    child.join(120)
    assert child.exitcode == -9
    services = build_services(_settings(tmp_path))
    try:
        assert services.ingestor.apply(_doc("a", 4)) == ("updated", 4)  # fewer chunks than the dead write
        assert services.ingestor.delete("push", "b")
        ids = {pid for r in services.catalog.documents() for pid in r.ids}
        assert len(ids) == 4 and {p.id for p in all_points(services)} == ids and services.index.size() == 4
    finally:
        services.close()
