"""Fast versions of the battery's leak duel and ingestion state machine (``battery/``, issue #9):
the same code at small scale, through the real server, pipeline, Edge index and SQLite catalog.

- leak duel: 20 principals (0/1/50/500 groups, user-level denies, the other tenant, admins, no
  search scope, refused tokens) × 300 documents (+30 in the other tenant), every read path
  against the oracle;
- state machine: 100 steps of grant / revoke / content edit / delete / ACL-only change /
  group membership (hypothesis and a seeded random walk, half each), every read path checked
  for five callers after every step.
"""

from __future__ import annotations

from pathlib import Path

from battery import leak_duel, state_machine

READ_PATHS = {"whoami", "count", "search_bm25", "search_dense", "search_hybrid", "explain", "document_get", "chunks",
              "admin_list"}


def test_leak_duel_small(tmp_path: Path) -> None:
    passed, figures, violations = leak_duel.run(n_principals=20, n_docs=300, seed=11, data_dir=tmp_path)
    assert figures["leaks"] == 0, violations[:10]
    assert figures["misses"] == 0, violations[:10]
    assert passed, violations[:10]
    assert figures["checks"] > 1000 and figures["items_compared"] > figures["chunks"]
    assert READ_PATHS | {"audit"} <= set(figures["per_path"])
    assert figures["ingest"]["index_points"] == figures["chunks"]
    kinds = figures["principals_by_kind"]
    for kind in ("0 groups", "1 groups", "50 groups", "500 groups", "globex", "untrusted tenant", "group overage"):
        assert kinds.get(kind), kind
    # the corpus holds every kind of near miss the oracle must keep hidden
    assert {"denied", "stale", "other_tenant", "private"} <= set(figures["hidden_document_reads_by_reason"])


def test_state_machine_small(tmp_path: Path) -> None:
    passed, figures, violations = state_machine.run(steps=100, steps_per_example=25, seed=20260101, data_dir=tmp_path)
    assert figures["leaks"] == 0, violations[:10]
    assert figures["misses"] == 0, violations[:10]
    assert passed, violations[:10]
    assert figures["steps"] >= 100 and figures["checks"] > 0
    assert READ_PATHS <= set(figures["per_path"]) | {"search_hybrid"}  # hybrid runs with explain here
    assert {"put", "put_same_content", "patch_acl", "grant", "revoke", "delete"} <= set(figures["rules"])
