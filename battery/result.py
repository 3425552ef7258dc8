"""One shape for every battery figure: ``battery/results/<name>.json``.

Each battery module's ``main()`` runs its check, calls :func:`write_result` and returns the
process exit status (non-zero on any violation), so every item is one command that fails loudly.
"""

from __future__ import annotations

import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def results_dir() -> Path:
    """``BATTERY_RESULTS_DIR`` when set (the fast versions in ``make test`` write to a temp dir)."""
    return Path(os.environ.get("BATTERY_RESULTS_DIR") or RESULTS)


def write_result(name: str, *, passed: bool, figures: dict[str, Any], command: str,
                 violations: list[str] | None = None, started: float | None = None) -> Path:
    out = results_dir() / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "name": name,
        "passed": passed,
        "command": command,
        "figures": figures,
        "violations": (violations or [])[:50],
        "duration_s": round(time.time() - started, 1) if started else None,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cores": os.cpu_count(), "platform": platform.platform()},
    }, indent=1, default=str))
    return out


def exit_code(passed: bool) -> int:
    return 0 if passed else 1
