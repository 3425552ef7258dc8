"""The forged-token corpus at scale through the live HTTP app, and the JWKS cache under attack.

``python -m battery.tokens [--repeat 5] [--flood-s 4]``

Replay (``--repeat`` times, fresh issuer keys and a fresh app each time): the app runs in
``oidc`` mode behind uvicorn on loopback, trusting a loopback issuer whose discovery document and
JWKS are fetched by the production ``RemoteJwks`` (``battery/token_corpus.py``). Every forged
token of the corpus is sent to several protected endpoints by concurrent clients; each must be a
401 with a fixed-phrase ``WWW-Authenticate`` challenge. Genuine RS256/PS256/ES256 tokens from
the same issuer are the control: they must be accepted. The attacker's JWKS server (named by
``jku``/``x5u`` headers) must never be contacted, and the issuer's JWKS is fetched at most once
per cooldown however many unknown kids arrive.

JWKS behaviours (real clock, short timings through the ordinary settings):

- flood: concurrent tokens with random kids for ``--flood-s`` seconds; JWKS fetches must stay
  within one per cooldown (plus the first), and genuine tokens keep working meanwhile;
- rotation: the issuer publishes a new key; a token signed with it is accepted once the
  cooldown since the last fetch has passed;
- IdP down: never reached -> 503 ``jwks_unavailable`` + ``Retry-After`` (fail closed); reached,
  then down -> cached keys keep working through the stale grace, then 503; back up -> 200.

Every log record of the run (root logger at DEBUG) is scanned for the text of any token sent
and for token-shaped text (``testkit/log_hygiene.py``); both counts must be 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import httpx  # noqa: E402

from battery.result import exit_code, write_result  # noqa: E402
from battery.token_corpus import (  # noqa: E402
    CASES,
    GENUINE_ALGS,
    REJECT_CODES,
    SAFE_CHALLENGE,
    Ctx,
    corpus_context,
    genuine,
    issuer_settings,
)

WORKERS = 8
_RUNS = re.compile(r"[A-Za-z0-9_-]{24,}")
# (method, path, JSON body): protected endpoints every token is sent to, and what a genuine token
# (scope clearance:search, group finance) gets there: authenticated, so anything but 401.
ENDPOINTS: list[tuple[str, str, dict[str, Any] | None, int]] = [
    ("GET", "/v1/whoami", None, 200),
    ("POST", "/v1/search", {"query": "quarterly budget", "top_k": 5}, 200),
    ("GET", "/v1/chunks/count", None, 200),
    ("GET", "/v1/admin/sources", None, 403),  # valid token, scope missing: 403, never 401
]


@dataclass
class Tally:
    forged_sent: int = 0
    forged_rejected: int = 0                     # 401 + safe challenge + a known refusal code
    codes: Counter[str] = field(default_factory=Counter)
    genuine_sent: int = 0
    genuine_accepted: int = 0
    server_errors: int = 0                       # 5xx outside the deliberate IdP-down phase
    violations: list[str] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def forged(self, name: str, where: str, resp: httpx.Response) -> None:
        challenge = resp.headers.get("www-authenticate", "")
        try:
            code = resp.json().get("error", {}).get("code")
        except ValueError:
            code = None
        ok = resp.status_code == 401 and bool(SAFE_CHALLENGE.fullmatch(challenge)) and code in REJECT_CODES
        with self.lock:
            self.forged_sent += 1
            self.forged_rejected += ok
            self.codes[str(code)] += 1
            self.server_errors += resp.status_code >= 500
            if not ok:
                self.violations.append(f"forged {name!r} at {where}: {resp.status_code} {code} {challenge[:80]!r}")

    def control(self, name: str, where: str, resp: httpx.Response, expected: int) -> None:
        with self.lock:
            self.genuine_sent += 1
            self.genuine_accepted += resp.status_code == expected
            self.server_errors += resp.status_code >= 500
            if resp.status_code != expected:
                self.violations.append(f"genuine {name} at {where}: {resp.status_code}, expected {expected}")


class LogCapture(logging.Handler):
    """Every record, formatted as production formats it (JSON, fields, tracebacks)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        from core.logging import JsonFormatter

        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(("httpx", "httpcore")):  # the battery's own HTTP client
            return
        try:
            line = self.format(record)
        except Exception:
            line = f"{record.name} {record.getMessage()}"
        with self._guard:
            self.lines.append(line)


@contextmanager
def captured_logs() -> Iterator[LogCapture]:
    root = logging.getLogger()
    handler, level = LogCapture(), root.level
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _quiet_stderr() -> None:
    """Keep the root logger at DEBUG (every record reaches the scan) but stderr at WARNING."""
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    for h in root.handlers:
        if type(h).__name__ == "_StderrJson":
            h.setLevel(logging.WARNING)


@contextmanager
def oidc_app(tmp: Path, ctx: Ctx, **auth: Any) -> Iterator[str]:
    """The real app in oidc mode trusting the corpus issuer, on loopback: its base URL."""
    from api.app import create_app
    from app.services import build_services
    from core.settings import AuthSettings, EmbedderSettings, Settings, StorageSettings
    from testkit.live_server import LiveServer

    settings = Settings(storage=StorageSettings(data_dir=tmp / "var"), embedder=EmbedderSettings(kind="hash"),
                        auth=AuthSettings(mode="oidc", issuers=[issuer_settings(ctx)], **auth))
    services = build_services(settings)
    try:
        app = create_app(settings, services)
        _quiet_stderr()
        with LiveServer(app) as server:
            yield server.url
    finally:
        services.close()


def _send(http: httpx.Client, method: str, path: str, body: dict[str, Any] | None, token: str) -> httpx.Response:
    header = f"Bearer {token}".strip().encode("utf-8")  # as the unit test does: non-ASCII tokens go as bytes
    return http.request(method, path, headers={"authorization": header}, json=body)


# ------------------------------------------------------------------------------------ replay

def replay(tmp: Path, tally: Tally) -> dict[str, Any]:
    """One repeat: fresh keys, fresh app; the whole corpus at every endpoint, concurrently."""
    with corpus_context() as ctx, oidc_app(tmp, ctx) as url:
        started = time.monotonic()
        jobs: list[tuple[str, str, str, dict[str, Any] | None, str, int | None]] = []
        for name, build in CASES.items():
            token = build(ctx)
            tally.tokens.append(token)
            jobs += [(name, m, p, b, token, None) for m, p, b, _ in ENDPOINTS]
        for alg in GENUINE_ALGS:
            token = genuine(ctx, alg)
            tally.tokens.append(token)
            jobs += [(alg, m, p, b, token, expected) for m, p, b, expected in ENDPOINTS]
        local = threading.local()

        def one(job: tuple[str, str, str, dict[str, Any] | None, str, int | None]) -> None:
            name, method, path, body, token, expected = job
            http = getattr(local, "http", None)
            if http is None:
                http = local.http = httpx.Client(base_url=url, timeout=30)
            resp = _send(http, method, path, body, token)
            where = f"{method} {path}"
            if expected is None:
                tally.forged(name, where, resp)
            else:
                tally.control(name, where, resp, expected)

        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(one, jobs))
        elapsed = time.monotonic() - started
        attacker_hits = sum(ctx.evil_server.hits.values())
        fetches = ctx.idp.jwks_fetches
        bound = 1 + int(elapsed // 30) + 1  # first fetch, one per 30 s cooldown, one at the edge
        if attacker_hits:
            tally.violations.append(f"the attacker's JWKS server was contacted: {dict(ctx.evil_server.hits)}")
        if fetches > bound:
            tally.violations.append(f"{fetches} JWKS fetches in {elapsed:.1f} s, bound {bound}")
        return {"requests": len(jobs), "seconds": round(elapsed, 2), "jwks_fetches": fetches,
                "jwks_fetch_bound": bound, "attacker_jwks_hits": attacker_hits}


# ------------------------------------------------------------------------------------ JWKS

def flood_and_rotation(tmp: Path, tally: Tally, *, flood_s: float, cooldown_s: float) -> dict[str, Any]:
    from testkit.oidc.harness import claims, jwks, mint, rsa_key

    attacker = rsa_key("attacker")
    with corpus_context() as ctx, oidc_app(tmp, ctx, jwks_cooldown_s=cooldown_s) as url:
        good = genuine(ctx, "RS256")
        tally.tokens.append(good)
        with httpx.Client(base_url=url, timeout=30) as http:
            first = _send(http, "GET", "/v1/whoami", None, good)
            tally.control("RS256 before flood", "GET /v1/whoami", first, 200)
        before = ctx.idp.jwks_fetches
        stop = time.monotonic() + flood_s
        sent = Counter[str]()
        guard = threading.Lock()

        def flood() -> None:
            with httpx.Client(base_url=url, timeout=30) as http:
                i = 0
                while time.monotonic() < stop:
                    i += 1
                    if i % 10 == 0:  # genuine tokens keep working during the flood
                        resp = _send(http, "GET", "/v1/whoami", None, good)
                        tally.control("RS256 during flood", "GET /v1/whoami", resp, 200)
                        with guard:
                            sent["genuine"] += 1
                        continue
                    token = mint(attacker, claims(ctx.iss), kid=os.urandom(6).hex())
                    with guard:
                        tally.tokens.append(token)
                        sent["forged"] += 1
                    tally.forged("random kid", "GET /v1/whoami", _send(http, "GET", "/v1/whoami", None, token))

        started = time.monotonic()
        threads = [threading.Thread(target=flood) for _ in range(WORKERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
        flood_fetches = ctx.idp.jwks_fetches - before
        bound = int(elapsed // cooldown_s) + 1
        if flood_fetches > bound:
            tally.violations.append(f"unknown-kid flood: {flood_fetches} JWKS fetches in {elapsed:.1f} s, "
                                    f"cooldown {cooldown_s} s, bound {bound}")

        # rotation: the issuer starts signing with a new key it has just published
        new_key = rsa_key("rsa-2")
        ctx.idp.jwks = jwks(new_key, ctx.rsa, ctx.ec)
        rotated = mint(new_key, ctx.payload())
        tally.tokens.append(rotated)
        fetches_before_rotation = ctx.idp.jwks_fetches
        t0 = time.monotonic()
        accepted_after: float | None = None
        with httpx.Client(base_url=url, timeout=30) as http:
            while time.monotonic() - t0 < cooldown_s * 3 + 2:
                resp = _send(http, "GET", "/v1/whoami", None, rotated)
                if resp.status_code == 200:
                    accepted_after = time.monotonic() - t0
                    break
                if resp.status_code != 401:
                    tally.violations.append(f"rotation: {resp.status_code} while waiting for the new key")
                time.sleep(cooldown_s / 4)
            old = _send(http, "GET", "/v1/whoami", None, good)
        if accepted_after is None:
            tally.violations.append("rotation: a token signed with the newly published key was never accepted")
        if old.status_code != 200:
            tally.violations.append(f"rotation: the old key, still published, got {old.status_code}")
        return {
            "flood_seconds": round(elapsed, 2), "flood_forged_tokens": sent["forged"],
            "flood_genuine_tokens": sent["genuine"], "jwks_cooldown_s": cooldown_s,
            "flood_jwks_fetches": flood_fetches, "flood_jwks_fetch_bound": bound,
            "rotation_accepted_after_s": round(accepted_after, 2) if accepted_after is not None else None,
            "rotation_jwks_fetches": ctx.idp.jwks_fetches - fetches_before_rotation,
        }


def idp_down(tmp: Path, tally: Tally, *, cooldown_s: float = 1.0, max_age_s: float = 2.0,
             grace_s: float = 3.0) -> dict[str, Any]:
    """Never reached -> 503; reached, then down -> cached keys through the grace -> 503; up -> 200."""
    steps: list[str] = []

    def expect(what: str, resp: httpx.Response, status: int) -> None:
        steps.append(f"{what}: {resp.status_code}")
        if resp.status_code != status:
            tally.violations.append(f"IdP down, {what}: {resp.status_code}, expected {status}")
        if status == 503 and resp.status_code == 503:
            code = resp.json()["error"]["code"]
            if code != "jwks_unavailable" or int(resp.headers.get("retry-after", "0")) < 1:
                tally.violations.append(f"IdP down, {what}: 503 without jwks_unavailable/Retry-After ({code})")
        elif resp.status_code >= 500:
            tally.server_errors += 1

    with corpus_context(cache_control=f"max-age={int(max_age_s)}") as ctx, \
            oidc_app(tmp, ctx, jwks_cooldown_s=cooldown_s, jwks_max_age_s=max_age_s,
                     jwks_stale_grace_s=grace_s) as url, httpx.Client(base_url=url, timeout=30) as http:
        good = genuine(ctx, "ES256")
        tally.tokens.append(good)

        def whoami() -> httpx.Response:
            return _send(http, "GET", "/v1/whoami", None, good)

        ctx.idp.status = 503
        expect("IdP never reached", whoami(), 503)
        ctx.idp.status = 200
        time.sleep(cooldown_s + 0.2)
        expect("IdP up", whoami(), 200)
        fetched = time.monotonic()
        ctx.idp.status = 503
        time.sleep(max(0.0, fetched + max_age_s + 0.5 - time.monotonic()))
        expect("IdP down, keys stale, within grace", whoami(), 200)
        time.sleep(max(0.0, fetched + max_age_s + grace_s + 0.5 - time.monotonic()))
        expect("IdP down, past the grace", whoami(), 503)
        ctx.idp.status = 200
        time.sleep(cooldown_s + 0.2)
        expect("IdP back", whoami(), 200)
        return {"idp_down_sequence": steps, "idp_down_jwks_attempts": dict(ctx.idp.hits)}


# ------------------------------------------------------------------------------------ main

def scan_logs(lines: list[str], tokens: list[str]) -> tuple[int, int]:
    """(records holding text of a token that was sent, records holding token-shaped text)."""
    from testkit.log_hygiene import find_secrets

    # A token in a log line shows up as its segments: base64url runs delimited by the dots and
    # by the JSON around them. Exact run membership keeps this linear in the log size; anything
    # token-like that is not an exact segment is caught by the token-shaped scan.
    parts = {p for t in tokens for p in t.split(".") if len(p) >= 24}
    text_hits = sum(1 for line in lines if any(run in parts for run in _RUNS.findall(line)))
    shaped = sum(1 for line in lines if find_secrets(line))
    return text_hits, shaped


def run(tmp: Path, *, repeat: int, flood_s: float, cooldown_s: float = 1.0,
        log: Any = lambda s: None) -> tuple[bool, dict[str, Any], list[str]]:
    tally = Tally()
    replays: list[dict[str, Any]] = []
    with captured_logs() as logs:
        for r in range(repeat):
            replays.append(replay(tmp / f"replay-{r}", tally))
            log(f"repeat {r + 1}/{repeat}: {replays[-1]}")
        jwks_figures = flood_and_rotation(tmp / "flood", tally, flood_s=flood_s, cooldown_s=cooldown_s)
        log(f"flood and rotation: {jwks_figures}")
        down = idp_down(tmp / "down", tally)
        log(f"IdP down: {down['idp_down_sequence']}")
    text_hits, shaped = scan_logs(logs.lines, tally.tokens)
    if text_hits or shaped:
        tally.violations.append(f"logs: {text_hits} records hold token text, {shaped} hold token-shaped text")
    if tally.server_errors:
        tally.violations.append(f"{tally.server_errors} 5xx answers outside the IdP-down phase")
    forged_replay = repeat * len(CASES) * len(ENDPOINTS)
    figures = {
        "repeats": repeat,
        "corpus_size": len(CASES),
        "endpoints": [f"{m} {p}" for m, p, _, _ in ENDPOINTS],
        "forged_tokens_sent": tally.forged_sent,
        "forged_tokens_sent_in_replay": forged_replay,
        "rejected_401_with_challenge": tally.forged_rejected,
        "rejection_codes": dict(sorted(tally.codes.items())),
        "genuine_tokens_sent": tally.genuine_sent,
        "genuine_tokens_accepted": tally.genuine_accepted,
        "server_errors_5xx": tally.server_errors,
        "replay_jwks_fetches": [r["jwks_fetches"] for r in replays],
        "replay_jwks_fetch_bounds": [r["jwks_fetch_bound"] for r in replays],
        "attacker_jwks_hits": sum(r["attacker_jwks_hits"] for r in replays),
        "replay_seconds": [r["seconds"] for r in replays],
        **jwks_figures,
        **down,
        "log_records_scanned": len(logs.lines),
        "token_text_in_logs": text_hits,
        "token_shaped_text_in_logs": shaped,
    }
    passed = (not tally.violations and tally.forged_rejected == tally.forged_sent
              and tally.genuine_accepted == tally.genuine_sent and tally.server_errors == 0)
    return passed, figures, tally.violations


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m battery.tokens", description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="corpus replays, each with fresh keys and app")
    parser.add_argument("--flood-s", type=float, default=4.0, help="seconds of unknown-kid flood")
    args = parser.parse_args(argv)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="clearance-tokens-") as tmp:
        passed, figures, violations = run(Path(tmp), repeat=args.repeat, flood_s=args.flood_s,
                                          log=lambda s: print(s, flush=True))
    command = "python -m battery.tokens" + (f" --repeat {args.repeat}" if args.repeat != 5 else "") + \
        (f" --flood-s {args.flood_s:g}" if args.flood_s != 4.0 else "")
    path = write_result("tokens", passed=passed, figures=figures, command=command, violations=violations,
                        started=started)
    for v in violations[:20]:
        print("VIOLATION", v)
    print(f"tokens: {'PASS' if passed else 'FAIL'} in {time.time() - started:.0f} s "
          f"({figures['forged_tokens_sent']} forged, {figures['rejected_401_with_challenge']} refused; "
          f"{figures['genuine_tokens_accepted']}/{figures['genuine_tokens_sent']} genuine accepted) -> {path}")
    return exit_code(passed)


if __name__ == "__main__":
    sys.exit(main())
