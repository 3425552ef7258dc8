"""Write-side battery (issue #13): who may write what, where the server may read, what a
manifest mistake can do, and whether every write is audited exactly once.

``python -m battery.writes [--rounds 5] [--fuzz-cases 2000] [--e2e-every 25] [--seed N]``

One live server (uvicorn on loopback, Qdrant Edge, SQLite, hash embedder, dev-issuer tokens that
may name a second tenant, ``ingest.allowed_roots`` = one folder of the run) and four checks:

- **Matrix**: every write route (PUT, PATCH acl, DELETE, folder job, resync; source create,
  change, delete) × every caller kind (no token, search only, ingest for another source, ingest
  for this source, admin, another tenant), ``--rounds`` times, against the expected status and
  error code (``EXPECTED``). Each case starts from a known state (the document exists, the source
  to delete exists).
- **Paths**: folder jobs for absolute paths outside the roots, ``..`` climbs, links to folders
  outside, ``/proc``, ``/sys``, ``/dev``, a FIFO and a device as the job path; inside a root,
  links to outside files, to ``/etc/passwd``, to ``/dev/zero``, a FIFO and a socket. No job may
  read outside the root (every indexed document's URI is under it, no content from outside is
  indexed), special files are skipped with their code and no job hangs.
- **Manifest fuzzer**: a random tree and an intended manifest, then one mutation: a typo in a
  file or folder key, in the tenant, in a principal's grammar (kind, case, padding, control
  character, wildcard, extra colon, missing kind), in an entry or top-level key; or a harmless
  rewrite that must be accepted (key spelled ``./x`` or ``x/``, entries reordered, a valid
  principal that names nobody). Oracle: if the mutated manifest is accepted, no file may be
  readable by a principal set (every single principal of the universe and each with
  ``tenant:acme``) that the intended manifest does not let read it; a rejected one must be
  rejected before any write. Every ``--e2e-every``-th case goes through a real folder job: an
  accepted one's index ACLs are checked against the oracle, a rejected one must leave the
  catalog untouched. Limit (README): a typo that yields another well-formed name (``group:hr``
  → ``group:hrr``) cannot be told from intent; in a deny list it widens access. The fuzzer does
  not generate those; it does generate well-formed allow typos (they grant nobody).
- **Audit**: every request above that was answered 2xx or 403/404-refused is in the write audit
  exactly once at request level (one event with its request id and no document, or the one
  document event of a PUT/PATCH/DELETE), and every document change of a job is one event.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import httpx  # noqa: E402

from battery.result import report  # noqa: E402

TENANT, FOREIGN = "acme", "globex"
INGEST, SEARCH, ADMIN = "clearance:ingest", "clearance:search", "clearance:admin"
CALLERS = ("no_token", "search_only", "ingest_other_source", "ingest_this_source", "admin", "other_tenant")
ROUTES = ("put", "patch_acl", "delete", "folder_job", "resync", "source_create", "source_update", "source_delete")
WRITE_ROUTES = ROUTES[:5]

# Expected (status, code) per route and caller kind; None: allowed (2xx).
_WRITE = {"no_token": (401, "missing_token"), "search_only": (403, "insufficient_scope"),
          "ingest_other_source": (403, "source_forbidden"), "ingest_this_source": None,
          "admin": (403, "source_forbidden"), "other_tenant": (403, "wrong_tenant")}
_ADMIN = {"no_token": (401, "missing_token"), "search_only": (403, "insufficient_scope"),
          "ingest_other_source": (403, "insufficient_scope"), "ingest_this_source": (403, "insufficient_scope"),
          "admin": None, "other_tenant": (403, "wrong_tenant")}
EXPECTED: dict[str, dict[str, tuple[int, str] | None]] = {
    **{r: _WRITE for r in WRITE_ROUTES}, **{r: _ADMIN for r in ROUTES[5:]}}


@dataclass
class Outcome:
    figures: dict[str, Any] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    audited: list[tuple[str, str, int]] = field(default_factory=list)  # (label, request id, status)


# ------------------------------------------------------------------------------------- server


class WriteEnv:
    def __init__(self, work: Path) -> None:
        from api.app import create_app
        from app.services import build_services
        from battery.duel_corpus import two_tenant_authenticator
        from core.settings import EmbedderSettings, IngestSettings, Settings, StorageSettings
        from testkit.live_server import LiveServer

        self.work = work
        self.allowed = work / "allowed"
        self.allowed.mkdir(parents=True)
        self.settings = Settings(storage=StorageSettings(data_dir=work / "var"), embedder=EmbedderSettings(kind="hash"),
                                 ingest=IngestSettings(tenant=TENANT, allowed_roots=[self.allowed]), log_level="WARNING")
        self.services = build_services(self.settings)
        self.services.auth = two_tenant_authenticator(self.services)
        self.server = LiveServer(create_app(self.settings, self.services))
        self.server.__enter__()
        self.http = httpx.Client(base_url=self.server.url, timeout=120)

    def close(self) -> None:
        try:
            self.http.close()
            self.server.__exit__()
        finally:
            self.services.close()

    def token(self, sub: str, *, groups: tuple[str, ...] = (), scopes: tuple[str, ...] = (SEARCH,),
              tenant: str = TENANT) -> dict[str, str]:
        dev = self.services.auth.dev
        assert dev is not None
        return {"authorization": "Bearer " + dev.mint(sub, groups=list(groups), scopes=list(scopes), tenant=tenant)}

    def register(self, name: str, kind: str = "push", writers: tuple[str, ...] = ("user:alpha-bot",),
                 root: Path | None = None) -> None:
        from testkit.sources import register_source

        register_source(self.services, name, kind=kind, writers=writers, root=root)

    def request_events(self, request_id: str) -> list[dict[str, Any]]:
        return self.services.write_audit.events(request_id=request_id)


def _headers(env: WriteEnv, kind: str) -> dict[str, str]:
    return {
        "no_token": {},
        "search_only": env.token("alpha-bot", scopes=(SEARCH,)),
        "ingest_other_source": env.token("beta-bot", groups=("beta-writers",), scopes=(INGEST,)),
        "ingest_this_source": env.token("alpha-bot", scopes=(INGEST,)),
        "admin": env.token("root", scopes=(ADMIN,)),
        "other_tenant": env.token("alpha-bot", scopes=(INGEST, ADMIN), tenant=FOREIGN),
    }[kind]


# ------------------------------------------------------------------------------------- matrix


def run_matrix(env: WriteEnv, rounds: int, out: Outcome) -> None:
    files = env.allowed / "files"
    files.mkdir()
    (files / "acl.toml").write_text('[folders."."]\nallow = ["tenant:acme"]\n')
    (files / "memo.txt").write_text("A memo about the travel policy.")
    env.register("alpha", writers=("user:alpha-bot",))
    env.register("beta", writers=("group:beta-writers",))
    env.register("files", kind="filesystem", root=files)
    seed_doc = {"filename": "q3.txt", "content": "Quarterly revenue forecast.", "acl": {"allow": ["group:finance"]}}
    owner = env.token("alpha-bot", scopes=(INGEST,))
    mismatches: list[str] = []
    cases = Counter[str]()
    n = 0
    for rnd in range(rounds):
        for route in ROUTES:
            for kind in CALLERS:
                n += 1
                doc = f"doc-{rnd}-{route}-{kind}"
                # a known state: the document exists, the source to change or delete exists
                if route in ("patch_acl", "delete"):
                    r = env.http.put(f"/v1/sources/alpha/documents/{doc}", json=seed_doc, headers=owner)
                    assert r.status_code == 200, r.text
                target = f"tmp-{n}"
                if route in ("source_update", "source_delete"):
                    env.register(target)
                headers = _headers(env, kind)
                req: dict[str, Any] = {
                    "put": ("PUT", f"/v1/sources/alpha/documents/{doc}",
                            {**seed_doc, "content": f"Revenue note {n}."}),
                    "patch_acl": ("PATCH", f"/v1/sources/alpha/documents/{doc}/acl", {"allow": ["tenant:acme"]}),
                    "delete": ("DELETE", f"/v1/sources/alpha/documents/{doc}", None),
                    "folder_job": ("POST", "/v1/ingest/jobs", {"path": str(files), "source": "files"}),
                    "resync": ("POST", "/v1/admin/sources/files/resync", None),
                    "source_create": ("POST", "/v1/admin/sources", {"name": target, "kind": "push",
                                                                    "writers": ["user:alpha-bot"]}),
                    "source_update": ("PATCH", f"/v1/admin/sources/{target}", {"writers": ["user:x"]}),
                    "source_delete": ("DELETE", f"/v1/admin/sources/{target}", None),
                }[route]
                method, path, body = req
                r = env.http.request(method, path, json=body, headers=headers)
                expected = EXPECTED[route][kind]
                got_code = r.json().get("error", {}).get("code") if r.status_code >= 400 else None
                ok = (r.status_code < 300) if expected is None else (r.status_code, got_code) == expected
                cases[f"{route}:{kind}"] += 1
                if not ok:
                    mismatches.append(f"{route} as {kind}: got {r.status_code} {got_code}, expected "
                                      f"{expected or '2xx'}")
                if r.status_code != 401:
                    out.audited.append((f"{route}:{kind}", r.headers.get("x-request-id", ""), r.status_code))
    out.figures["matrix"] = {route: {kind: (f"{e[0]} {e[1]}" if e else "2xx") for kind, e in EXPECTED[route].items()}
                             for route in ROUTES}
    out.figures["matrix_cases"] = n
    out.figures["matrix_mismatches"] = len(mismatches)
    out.violations += mismatches


# -------------------------------------------------------------------------------------- paths


def run_paths(env: WriteEnv, out: Outcome) -> None:
    root = env.allowed / "share"
    root.mkdir()
    (root / "acl.toml").write_text('[folders."."]\nallow = ["tenant:acme"]\n')
    (root / "ok.txt").write_text("An ordinary note inside the root.")
    outside = env.work / "outside"
    outside.mkdir()
    secret = outside / "secret.txt"
    marker = "OUTSIDE-SECRET-MARKER"
    secret.write_text(f"{marker} must never be indexed.")
    (env.allowed / "to-outside").symlink_to(outside, target_is_directory=True)
    fifo_path = env.allowed / "job.fifo"
    os.mkfifo(fifo_path)
    # inside the root: things a sync must skip without reading
    (root / "link-out.txt").symlink_to(secret)
    (root / "passwd.txt").symlink_to("/etc/passwd")
    (root / "zero.txt").symlink_to("/dev/zero")
    (root / "dir-out").symlink_to(outside, target_is_directory=True)
    os.mkfifo(root / "pipe.txt")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock.txt"))
    env.register("share", kind="filesystem", root=root)
    headers = env.token("alpha-bot", scopes=(INGEST,))
    refused_paths = [str(outside), "/etc", "/", f"{root}/../../outside", f"{env.allowed}/../outside",
                     str(env.allowed / "to-outside"), "/proc/self/root", "/proc/self/cwd", "/sys", "/dev",
                     str(fifo_path), "relative/path", "/dev/null", str(secret)]
    violations = []
    for p in refused_paths:
        r = env.http.post("/v1/ingest/jobs", json={"path": p, "source": "share"}, headers=headers)
        if r.status_code < 400:
            violations.append(f"path {p!r} was synced ({r.status_code})")
        elif r.status_code == 403:
            out.audited.append((f"path:{p}", r.headers.get("x-request-id", ""), r.status_code))
    t0 = time.time()
    r = env.http.post("/v1/ingest/jobs", json={"path": str(root), "source": "share"}, headers=headers)
    took = time.time() - t0
    codes: dict[str, str] = {}
    if r.status_code != 200:
        violations.append(f"the legitimate sync failed: {r.status_code} {r.text[:200]}")
    else:
        out.audited.append(("path:legit", r.headers.get("x-request-id", ""), 200))
        codes = {e["doc"].rsplit("/", 1)[-1]: e["code"] for e in r.json()["errors"]}
        want = {"link-out.txt": "symlink_escape", "passwd.txt": "symlink_escape", "zero.txt": "symlink_escape",
                "dir-out": "symlink_escape", "pipe.txt": "not_regular_file", "sock.txt": "not_regular_file"}
        if codes != want:
            violations.append(f"per-file codes {codes} != {want}")
    sock.close()
    from retrieval.payload import ChunkPayload

    rows = list(env.services.catalog.documents(TENANT, "share"))
    for row in rows:
        if not row.uri.startswith(root.resolve().as_uri() + "/"):
            violations.append(f"indexed outside the root: {row.uri}")
        for hit in env.services.index.retrieve(row.ids):
            if marker in ChunkPayload.from_index(hit.payload).text:
                violations.append(f"content from outside the root indexed as {row.doc_id}")
    out.figures["path_cases"] = len(refused_paths) + 1 + 6
    out.figures["path_refused"] = len(refused_paths)
    out.figures["path_skipped_in_root"] = codes
    out.figures["path_legit_sync_s"] = round(took, 2)
    out.figures["path_violations"] = len(violations)
    out.violations += violations


# ---------------------------------------------------------------------------- manifest fuzzer

POOL = ("group:g0", "group:g1", "group:g2", "group:g3", "user:u0", "user:u1", "user:u2", "tenant:acme")


@dataclass
class Case:
    files: list[str]
    folders: list[str]
    tenant: str | None
    entries: dict[str, dict[str, dict[str, list[str]]]]  # section -> key -> {"allow": [...], "deny": [...]}
    extra_top: dict[str, Any] = field(default_factory=dict)
    raw_override: str | None = None

    def toml(self) -> str:
        if self.raw_override is not None:
            return self.raw_override
        lines = []
        if self.tenant is not None:
            lines.append(f"tenant = {json.dumps(self.tenant)}")
        for k, v in self.extra_top.items():
            lines.append(f"{k} = {json.dumps(v)}")
        for section in ("folders", "files"):
            for key, entry in self.entries.get(section, {}).items():
                lines.append(f"[{section}.{json.dumps(key)}]")
                for name, values in entry.items():
                    lines.append(f"{name} = {json.dumps(values)}")
        return "\n".join(lines) + "\n"


def random_case(rng: random.Random) -> Case:
    folders = ["a", "b", "a/x", "b/y"][: rng.randint(2, 4)]
    files = sorted({f"{rng.choice(['.'] + folders)}/{w}{i}.txt".removeprefix("./")
                    for i, w in enumerate(rng.sample(["report", "memo", "plan", "notes", "brief", "minutes"], 5))})
    entries: dict[str, dict[str, dict[str, list[str]]]] = {"folders": {}, "files": {}}
    for key in ["."] + folders:
        if rng.random() < 0.7:
            e: dict[str, list[str]] = {}
            if rng.random() < 0.8:
                e["allow"] = rng.sample(POOL, rng.randint(1, 2))
            if rng.random() < 0.4:
                e["deny"] = rng.sample(POOL[:-1], 1)
            if e:
                entries["folders"][key] = e
    for key in rng.sample(files, rng.randint(1, 3)):
        e = {}
        if rng.random() < 0.7:
            e["allow"] = rng.sample(POOL, rng.randint(1, 2))
        if rng.random() < 0.5 or not e:
            e["deny"] = rng.sample(POOL[:-1], 1)
        entries["files"][key] = e
    return Case(files, folders, TENANT if rng.random() < 0.6 else None, entries)


def _typo(rng: random.Random, s: str) -> str:
    i = rng.randrange(len(s))
    op = rng.choice(("swap", "drop", "insert", "replace", "case"))
    if op == "swap" and len(s) > 1:
        i = min(i, len(s) - 2)
        return s[:i] + s[i + 1] + s[i] + s[i + 2:]
    if op == "drop" and len(s) > 1:
        return s[:i] + s[i + 1:]
    if op == "insert":
        return s[:i] + rng.choice("abcdexyz") + s[i:]
    if op == "case" and s[i].isalpha() and s[i].swapcase() != s[i]:
        return s[:i] + s[i].swapcase() + s[i + 1:]
    return s[:i] + rng.choice("qwzk") + s[i + 1:]


BAD_PRINCIPALS: tuple[Callable[[str], str], ...] = (
    lambda p: "grup:" + p.split(":", 1)[1] if p.startswith("group:") else "usr:" + p.split(":", 1)[1],
    lambda p: p[0].upper() + p[1:],
    lambda p: p + " ",
    lambda p: p.replace(":", ": ", 1),
    lambda p: p + "\u0000",
    lambda p: p.split(":", 1)[0] + ":*",
    lambda p: p + "*",
    lambda p: p.split(":", 1)[1],
    lambda p: p.split(":", 1)[0] + ":",
    lambda p: p + ":x" if not p.startswith("role:") else "user:a:b",
    lambda p: p + "\u200b",
)
MUTATIONS = ("file_key", "folder_key", "tenant", "principal_grammar", "entry_key", "top_key",
             "benign_key_spelling", "benign_reorder", "benign_allow_name")


def mutate(rng: random.Random, case: Case, kind: str) -> tuple[Case, bool] | None:
    """(mutated case, whether it must be accepted); None when this kind does not apply."""
    m = Case(list(case.files), list(case.folders), case.tenant,
             {s: {k: {n: list(v) for n, v in e.items()} for k, e in d.items()} for s, d in case.entries.items()})
    existing = set(case.files) | set(case.folders) | {"."}
    if kind in ("file_key", "folder_key"):
        section = "files" if kind == "file_key" else "folders"
        keys = [k for k in m.entries[section] if k != "."]
        if not keys:
            return None
        key = rng.choice(keys)
        new = _typo(rng, key)
        if new in existing or new.strip("/") in existing or new.replace("//", "/") in existing:
            return None  # a typo that names another real path is not a detectable typo
        m.entries[section][new] = m.entries[section].pop(key)
        return m, False
    if kind == "tenant":
        m.tenant = rng.choice((_typo(rng, TENANT), "Acme", "acme ", FOREIGN))
        return (m, False) if m.tenant != TENANT else None
    if kind == "principal_grammar":
        spots = [(s, k, n) for s, d in m.entries.items() for k, e in d.items() for n, v in e.items() if v]
        if not spots:
            return None
        s, k, n = rng.choice(spots)
        values = m.entries[s][k][n]
        j = rng.randrange(len(values))
        values[j] = rng.choice(BAD_PRINCIPALS)(values[j])
        return m, False
    if kind == "entry_key":
        spots = [(s, k) for s, d in m.entries.items() for k, e in d.items() if e]
        if not spots:
            return None
        s, k = rng.choice(spots)
        name = rng.choice(list(m.entries[s][k]))
        m.entries[s][k][rng.choice(("alow", "dney", "Allow", "allows", "deny_"))] = m.entries[s][k].pop(name)
        return m, False
    if kind == "top_key":
        m.extra_top[rng.choice(("file", "folder", "Files", "tenants", "acl"))] = {}
        return m, False
    if kind == "benign_key_spelling":
        section = rng.choice(("files", "folders"))
        keys = [k for k in m.entries[section] if k != "."]
        if not keys:
            return None
        key = rng.choice(keys)
        spelled = rng.choice((f"./{key}", f"{key}/" if section == "folders" else f"./{key}", f"{key}//"[:-1]))
        m.entries[section][spelled] = m.entries[section].pop(key)
        return m, True
    if kind == "benign_reorder":
        for s in m.entries:
            items = list(m.entries[s].items())
            rng.shuffle(items)
            m.entries[s] = dict(items)
        return m, True
    if kind == "benign_allow_name":  # a well-formed name nobody holds: grants nobody
        spots = [(s, k) for s, d in m.entries.items() for k, e in d.items() if "allow" in e]
        if not spots:
            return None
        s, k = rng.choice(spots)
        m.entries[s][k]["allow"] = m.entries[s][k]["allow"] + [f"group:nobody-{rng.randrange(10**6)}"]
        return m, True
    raise ValueError(kind)


def _callers() -> list[frozenset[str]]:
    singles = [frozenset({p}) for p in POOL]
    return singles + [frozenset({p, "tenant:acme"}) for p in POOL if p != "tenant:acme"] + \
        [frozenset({"group:nobody-x", "tenant:acme"})]


CALLER_SETS = _callers()


def readable(acls: dict[str, Any]) -> set[tuple[str, frozenset[str]]]:
    return {(f, c) for f, acl in acls.items() for c in CALLER_SETS if acl.visible_to(c)}


def materialize(root: Path, case: Case) -> None:
    if root.exists():
        shutil.rmtree(root)
    for d in case.folders:
        (root / d).mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    for f in case.files:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_text(f"Contents of {f}: revenue notes.")
    (root / "acl.toml").write_text(case.toml(), "utf-8")


def run_fuzzer(env: WriteEnv, cases: int, e2e_every: int, seed: int, out: Outcome) -> None:
    from ingest.manifest import ManifestError
    from ingest.sources import FilesystemSource
    from retrieval.payload import acl_of

    rng = random.Random(seed)
    stats: Counter[str] = Counter()
    by_kind: Counter[str] = Counter()
    violations: list[str] = []
    fuzz_root = env.allowed / "fuzz"
    headers = env.token("alpha-bot", scopes=(INGEST,))
    admin = env.token("root", scopes=(ADMIN,))
    e2e = 0
    i = 0
    while stats["cases"] < cases:
        i += 1
        case = random_case(rng)
        kind = MUTATIONS[i % len(MUTATIONS)]
        mutated = mutate(rng, case, kind)
        if mutated is None:
            stats["not_applicable"] += 1
            continue
        m, must_accept = mutated
        stats["cases"] += 1
        by_kind[kind] += 1
        work = env.work / "fuzz-tmp"
        materialize(work / "intended", case)
        intended = FilesystemSource(work / "intended", "f", tenant=TENANT).acl_table()  # the strict reading
        materialize(work / "mutated", m)
        try:
            got = FilesystemSource(work / "mutated", "f", tenant=TENANT).acl_table()
            accepted = True
        except ManifestError:
            accepted, got = False, {}
        stats["accepted" if accepted else "rejected"] += 1
        if must_accept and not accepted:
            violations.append(f"case {i} ({kind}): a harmless rewrite was rejected:\n{m.toml()}")
        if accepted:
            extra = readable(got) - readable(intended)
            if extra:
                f, c = sorted(extra, key=str)[0]
                violations.append(f"case {i} ({kind}): {f} readable by {sorted(c)} only under the mutated manifest")
        if e2e_every and stats["cases"] % e2e_every == 0:
            e2e += 1
            name = f"fuzz{e2e}"
            materialize(fuzz_root / name, m)
            env.register(name, kind="filesystem", root=fuzz_root / name)
            r = env.http.post("/v1/ingest/jobs", json={"path": str(fuzz_root / name), "source": name}, headers=headers)
            out.audited.append((f"fuzz:{name}", r.headers.get("x-request-id", ""), r.status_code))
            if accepted != (r.status_code == 200):
                violations.append(f"case {i} ({kind}): the job answered {r.status_code}, the source said "
                                  f"{'accepted' if accepted else 'rejected'}")
            docs = list(env.services.catalog.documents(TENANT, name))
            if not accepted and docs:
                violations.append(f"case {i} ({kind}): a rejected manifest wrote {len(docs)} documents")
            for row in docs:  # what the engine will filter with
                for hit in env.services.index.retrieve(row.ids):
                    extra = readable({row.doc_id: acl_of(hit.payload)}) - readable({row.doc_id: intended[row.doc_id]})
                    if extra:
                        violations.append(f"case {i} ({kind}): indexed {row.doc_id} readable beyond the intent")
            d = env.http.delete(f"/v1/admin/sources/{name}", headers=admin)
            out.audited.append((f"fuzz-delete:{name}", d.headers.get("x-request-id", ""), d.status_code))
    out.figures["fuzz_cases"] = stats["cases"]
    out.figures["fuzz_rejected"] = stats["rejected"]
    out.figures["fuzz_accepted"] = stats["accepted"]
    out.figures["fuzz_by_mutation"] = dict(sorted(by_kind.items()))
    out.figures["fuzz_end_to_end_jobs"] = e2e
    out.figures["fuzz_caller_sets"] = len(CALLER_SETS)
    out.figures["fuzz_violations"] = len(violations)
    out.violations += violations


# -------------------------------------------------------------------------------------- audit


def check_audit(env: WriteEnv, out: Outcome) -> None:
    """Each audited request is in the write audit exactly once at request level; a job's document
    changes are one event each (the job's counts say how many)."""
    violations = []
    for label, rid, status in out.audited:
        if not rid:
            violations.append(f"{label}: no request id")
            continue
        events = env.request_events(rid)
        request_level = [e for e in events if e["doc_id"] is None or e["action"] in ("put", "patch_acl", "delete")]
        if len(request_level) != 1:
            violations.append(f"{label} ({status}): {len(request_level)} request-level events")
            continue
        ev = request_level[0]
        if status >= 400 and ev["outcome"] != "refused" and ev["status"] != status:
            violations.append(f"{label}: answered {status}, audited {ev['status']} {ev['outcome']}")
        if ev["action"] in ("sync", "resync") and ev["outcome"] == "done":
            changes = sum(v for k, v in ev["detail"]["counts"].items() if k not in ("unchanged", "failed"))
            doc_events = [e for e in events if e["doc_id"] is not None]
            if len(doc_events) != changes:
                violations.append(f"{label}: {changes} changes, {len(doc_events)} document events")
    out.figures["audit_requests_checked"] = len(out.audited)
    out.figures["audit_write_events"] = sum(1 for _ in env.services.write_audit.export())
    out.figures["audit_violations"] = len(violations)
    out.violations += violations


# ---------------------------------------------------------------------------------------- run


@dataclass
class WritesConfig:
    rounds: int = 5
    fuzz_cases: int = 2000
    e2e_every: int = 25
    seed: int = 13
    work_dir: Path | None = None


def run_battery(cfg: WritesConfig) -> dict[str, Any]:
    work = cfg.work_dir or Path(tempfile.mkdtemp(prefix="clearance-writes-"))
    env = WriteEnv(work / "run")
    out = Outcome()
    try:
        run_matrix(env, cfg.rounds, out)
        run_paths(env, out)
        run_fuzzer(env, cfg.fuzz_cases, cfg.e2e_every, cfg.seed, out)
        check_audit(env, out)
    finally:
        env.close()
        if cfg.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    out.figures["violations"] = len(out.violations)
    return {"passed": not out.violations, "figures": out.figures, "violations": out.violations}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m battery.writes", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fuzz-cases", type=int, default=2000)
    parser.add_argument("--e2e-every", type=int, default=25)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    started = time.time()
    result = run_battery(WritesConfig(rounds=args.rounds, fuzz_cases=args.fuzz_cases, e2e_every=args.e2e_every,
                                      seed=args.seed))
    return report("writes", result, argv, started)


if __name__ == "__main__":
    sys.exit(main())
