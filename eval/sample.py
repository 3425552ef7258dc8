"""Query sets from production: a sample of the queries people actually searched, taken from the
audit trail (raw text is there only with ``audit.store_raw_query`` on, an opt-in).

- only successful searches (status 200) with raw text count;
- personal data is scrubbed first, by configurable regular expressions (``DEFAULT_PII``:
  e-mail addresses, IBANs, card numbers, other runs of 6+ digits, phone numbers), each match
  replaced by ``[NAME]``; then queries are deduplicated (case and whitespace folded);
- stratified: one stratum per (principal set, source of the first result), each shuffled with
  the seed, and strata drawn from in turn (round robin) until ``n``, so a busy persona or a big
  source cannot crowd out the others.

The output is a query-set JSONL (``{"id", "query", "source", "principals_hash", "searches"}``)
that ``clearance eval run --live --queries`` asks as every persona.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from core.audit import principals_hash
from core.errors import InvalidRequestError
from eval.live import Persona

DEFAULT_PII: dict[str, str] = {
    "EMAIL": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+",
    "IBAN": r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){3,7}(?: ?[A-Z0-9]{1,3})?\b",
    "CARD": r"\b(?:\d[ -]?){13,19}\b",
    "NUMBER": r"\b\d{6,}\b",
    "PHONE": r"(?<![\w-])(?:\+\d{1,3}[ .-]?)?\(?\d{2,4}\)?[ .-]?\d{3,4}[ .-]?\d{3,5}\b",
}


def compile_patterns(extra: Iterable[str] = (), *, defaults: bool = True) -> list[tuple[str, re.Pattern[str]]]:
    """``extra`` holds ``NAME=REGEX`` items (applied after the defaults)."""
    out = [(k, re.compile(v)) for k, v in DEFAULT_PII.items()] if defaults else []
    for item in extra:
        name, sep, rx = item.partition("=")
        if not sep or not name or not rx:
            raise InvalidRequestError(f"PII pattern {item!r}: expected NAME=REGEX", code="usage")
        try:
            out.append((name, re.compile(rx)))
        except re.error as exc:
            raise InvalidRequestError(f"PII pattern {name}: {exc}", code="usage") from exc
    return out


def scrub(text: str, patterns: list[tuple[str, re.Pattern[str]]]) -> str:
    for name, rx in patterns:
        text = rx.sub(f"[{name}]", text)
    return " ".join(text.split())


def sample_queries(events: Iterable[dict[str, Any]], n: int, *, seed: int = 13,
                   patterns: list[tuple[str, re.Pattern[str]]] | None = None) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Up to ``n`` deduplicated, scrubbed, stratified queries; and counts of what was read."""
    if n < 1:
        raise InvalidRequestError("--n must be at least 1", code="usage")
    patterns = compile_patterns() if patterns is None else patterns
    stats = {"events": 0, "searches": 0, "without_text": 0, "unique": 0}
    unique: dict[str, dict[str, Any]] = {}
    for ev in events:
        stats["events"] += 1
        if ev.get("action") != "search" or ev.get("status") != 200:
            continue
        stats["searches"] += 1
        if not ev.get("query"):
            stats["without_text"] += 1
            continue
        text = scrub(str(ev["query"]), patterns)
        norm = text.casefold()
        if not norm:
            continue
        chunks = ev.get("chunks") or []
        source = str(chunks[0].get("source", "(none)")) if chunks else "(none)"
        rec = unique.get(norm)
        if rec is None:
            unique[norm] = {"query": text, "source": source, "principals_hash": ev.get("principals_hash", ""),
                            "searches": 1, "first_event": ev.get("id")}
        else:
            rec["searches"] += 1
    stats["unique"] = len(unique)
    strata: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for norm in sorted(unique):
        rec = unique[norm]
        strata.setdefault((rec["principals_hash"], rec["source"]), []).append(rec)
    rng = random.Random(seed)
    for key in sorted(strata):
        rng.shuffle(strata[key])
    picked: list[dict[str, Any]] = []
    order = sorted(strata)
    while len(picked) < n and any(strata[k] for k in order):
        for k in order:
            if strata[k] and len(picked) < n:
                picked.append(strata[k].pop())
    out = [{"id": f"audit-{r['first_event']}", "query": r["query"], "source": r["source"],
            "principals_hash": r["principals_hash"], "searches": r["searches"]} for r in picked]
    return out, stats


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """An ISO date or datetime (UTC when naive), or a look-back such as ``7d``, ``12h``, ``30m``."""
    now = now or datetime.now(UTC)
    m = re.fullmatch(r"(\d+)([dhm])", value.strip())
    if m:
        unit = {"d": "days", "h": "hours", "m": "minutes"}[m.group(2)]
        return now - timedelta(**{unit: int(m.group(1))})
    try:
        dt = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise InvalidRequestError(f"--since {value!r}: expected an ISO date/datetime or 7d, 12h, 30m", code="usage") from exc
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def write_jsonl(rows: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def searchers(events: Iterable[dict[str, Any]], personas: list[Persona], tenant: str) -> dict[str, Any]:
    """Who actually searched: one entry per principal set (the audit keeps its SHA-256 only, and
    the subjects in clear), matched against a personas file by hashing each persona's principal
    set as the resolver would hold it. Shows which personas stand for real traffic and which
    principal sets no persona covers yet (their subjects tell the operator whom to add)."""
    by_hash = {principals_hash(p.entitlements(tenant).principals): p.name for p in personas}
    sets: dict[str, dict[str, Any]] = {}
    for ev in events:
        if ev.get("action") != "search" or ev.get("tenant") != tenant:
            continue
        h = str(ev.get("principals_hash", ""))
        entry = sets.setdefault(h, {"principals_hash": h, "persona": by_hash.get(h), "searches": 0, "subjects": set()})
        entry["searches"] += 1
        entry["subjects"].add(str(ev.get("subject", "")))
    rows = sorted(sets.values(), key=lambda e: (-e["searches"], e["principals_hash"]))
    for e in rows:
        e["subjects"] = sorted(e["subjects"])[:10]
    matched = {e["persona"] for e in rows if e["persona"]}
    return {"principal_sets": rows,
            "searches": sum(e["searches"] for e in rows),
            "covered_searches": sum(e["searches"] for e in rows if e["persona"]),
            "personas_without_searches": [p.name for p in personas if p.name not in matched]}
