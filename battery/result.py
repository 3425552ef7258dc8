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


def report(name: str, result: dict[str, Any], argv: list[str] | None, started: float) -> int:
    """Record a battery item's result (``write_result``), print its figures and first violations,
    and return its exit code: the common end of every item's ``main``."""
    import sys

    command = f"python -m battery.{name} " + " ".join(argv if argv is not None else sys.argv[1:])
    path = write_result(name, passed=result["passed"], figures=result["figures"], command=command.strip(),
                        violations=result["violations"], started=started)
    print(json.dumps(result["figures"], indent=1))
    for v in result["violations"][:30]:
        print("VIOLATION:", v, file=sys.stderr)
    print(f"{'PASS' if result['passed'] else 'FAIL'}: {path}")
    return exit_code(result["passed"])
