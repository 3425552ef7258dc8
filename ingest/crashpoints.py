"""Test-only crash hook. ``CLEARANCE_CRASH_AT=<phase>:<n>`` makes the process SIGKILL itself the
n-th time it reaches ``crashpoint(<phase>)``; without the variable every call is a no-op.

The variable is read once per process (a forked child reads it again). The crash battery
(``battery/crash.py``) uses it to land kill -9 exactly at each phase boundary of ingestion.
"""

from __future__ import annotations

import os
import signal

ENV = "CLEARANCE_CRASH_AT"
# Where ingest.pipeline calls crashpoint(), i.e. just after each of these steps completed.
PHASES = ("recover", "parse", "acl_update", "metadata_update", "embed", "catalog_intent", "index_upsert",
          "stale_delete", "catalog_commit", "doc_delete")

_state: list | None = None  # [pid, phase or None, n, times reached]


def crashpoint(phase: str) -> None:
    global _state
    pid = os.getpid()
    if _state is None or _state[0] != pid:
        spec = os.environ.get(ENV, "")
        target, _, n = spec.partition(":")
        if spec and (target not in PHASES or not n.isdigit() or int(n) < 1):
            raise ValueError(f"{ENV}={spec!r}: expected <phase>:<n> with a phase of {PHASES}")
        _state = [pid, target or None, int(n or 0), 0]
    if _state[1] != phase:
        return
    _state[3] += 1
    if _state[3] == _state[2]:
        os.kill(pid, signal.SIGKILL)
