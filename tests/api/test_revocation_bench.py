"""The revocation benchmark (``python -m bench.revocation``) runs end to end on a few trials:
a PATCH that revokes access is visible to the very next search, well inside the 5 s goal."""

from __future__ import annotations

from pathlib import Path

from bench.revocation import markdown_line, run


def test_revocation_benchmark_smoke(tmp_path: Path) -> None:
    result = run(trials=3, filler=10, data_dir=tmp_path)
    assert result["timeouts"] == 0 and result["searches_after_patch_returned_that_still_saw_the_chunk"] == 0
    assert 0 < result["revoke_ms"]["p50"] <= result["revoke_ms"]["p99"] <= result["goal_p99_s"] * 1000
    assert result["pass"] is True
    assert "p99" in markdown_line(result) and "pass" in markdown_line(result)
