"""Fast version of the write-side battery (``python -m battery.writes``): the route × caller
matrix once, every path escape, 300 manifest mutations (every 30th through a real folder job),
and the write audit checked for every request."""

from __future__ import annotations

from pathlib import Path

from battery.writes import CALLERS, ROUTES, WritesConfig, run_battery


def test_write_matrix_paths_manifest_fuzzer_and_audit(tmp_path: Path) -> None:
    result = run_battery(WritesConfig(rounds=1, fuzz_cases=300, e2e_every=30, seed=5, work_dir=tmp_path))
    f = result["figures"]
    assert result["passed"], result["violations"][:10]
    assert f["matrix_cases"] == len(ROUTES) * len(CALLERS) and f["matrix_mismatches"] == 0
    assert f["path_violations"] == 0 and f["path_refused"] >= 10
    assert f["fuzz_cases"] == 300 and f["fuzz_violations"] == 0
    assert f["fuzz_rejected"] > 0 and f["fuzz_accepted"] > 0 and f["fuzz_end_to_end_jobs"] == 10
    assert f["audit_violations"] == 0 and f["audit_requests_checked"] > 50
