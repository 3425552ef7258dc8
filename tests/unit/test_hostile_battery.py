"""Fast version of the hostile-file battery (``python -m battery.hostile``): 40 hostile, broken and
valid files of every kind (zip structure attacks, amplifying and undecodable e-mail included)
through one real sync job (sandboxed parser, catalog, Edge index), then the push API of a live
server: the 2,000-line e-mail and a request over the body size limit."""

from __future__ import annotations

from pathlib import Path

from battery.hostile import KINDS, RSS_LIMIT, HostileConfig, plan, run_battery
from ingest.parse import ERROR_CODES


def test_plan_covers_every_kind_and_the_requested_total() -> None:
    for files in (40, 300, 1000):
        counts = plan(files)
        assert sum(counts.values()) == files and set(counts) == set(KINDS) and min(counts.values()) >= 1


def test_every_bad_file_fails_alone_with_its_code_and_every_valid_file_is_ingested(tmp_path: Path) -> None:
    # RUSAGE_CHILDREN would count every child this test process ever had: bound by polling only.
    result = run_battery(HostileConfig(files=40, seed=3, small=True, rusage_bound=False, work_dir=tmp_path,
                                       log=lambda _line: None))
    f = result["figures"]
    assert result["passed"], result["violations"]
    assert f["files"] == 40 and f["job_completed"]
    assert f["bad_files"] > 0 and f["bad_files_errored_with_expected_code"] == f["bad_files"]
    assert set(f["errors_by_code"]) <= set(ERROR_CODES)
    ingested, total = map(int, f["valid_ingested"].split("/"))
    assert total > 0 and ingested == total
    assert 0 < f["parser_peak_rss_mib"] * 2**20 <= RSS_LIMIT
    assert f["network_attempts"] == 0
    assert f["parser_isolation"] in ("netns", "seccomp")
    # The e-mail amplification case (2,000 short body lines) through the sync and the push API.
    lines = [chunks for rel, chunks in f["amplifying_chunks"].items() if rel.endswith("lines-2000.eml")]
    assert lines and all(0 < c <= 10 for c in lines)
    assert 0 < f["push_email_chunks"] <= 10
    # A request over api.max_body_bytes is refused before its body is read.
    assert f["push_over_limit"] == "413 body_too_large"
