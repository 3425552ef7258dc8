"""Crash battery: kill -9 a real ingestion process at every phase, resume, and check that the
catalog and the index agree exactly and equal a clean ingest of the same tree.

``python -m battery.crash [--runs 200] [--seed N] [--docs 40]``

Each run:

1. mutates the source tree (content edits that grow and shrink documents, ACL changes in
   ``acl.toml``, deletions, new files), so the next ingest has real work;
2. starts a real ingestion process (the ``clearance ingest`` command, hash embedder) and kills
   it with SIGKILL: either exactly at the n-th time it reaches a phase boundary (the test-only
   hook ``CLEARANCE_CRASH_AT=<phase>:<n>``, ``ingest/crashpoints.py``; n drawn from the number
   of times this run will reach it), or at a random moment: half of those anywhere in the
   process's life (mostly start-up and parsing), half a random 0-15 ms after a row was seen
   ``writing`` in the catalog (inside a write, not at a boundary);
3. sometimes kills the next process again inside ``recover()`` (a crash during recovery),
   sometimes changes the tree while nothing runs (ACL reverted, files edited);
4. runs the ingest again to completion (resume) and checks: every catalog chunk id is in the
   index (no *lost* chunk), nothing in the index is missing from the catalog (no *orphan*), no
   id or (document, chunk) position twice (no *duplicate*), every chunk's ACL payload equals its
   catalog row's (*ACL mismatch*) and so do its document key, position and content hash
   (*stale payload*), no row is left ``writing``, and the catalog holds exactly the tree's
   documents with their current content hash and manifest ACL;
5. every ``--reference-every`` runs and after the last, ingests the tree from scratch into a
   separate data dir and compares document keys, content hashes, ACLs, chunk ids and chunk
   text hashes with the resumed store.

The process that is killed is the CLI's ``ingest`` command in a process of its own: forked from
a forkserver that has the code imported (milliseconds to start), or, every
``--subprocess-every`` runs, a fresh interpreter (``python -c 'from cli.main import run; run()'``).
Either way it starts its own sandboxed parser, opens the Edge shard and the SQLite catalog, and
dies without any cleanup. Resume and checks run in this process.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from battery.result import exit_code, write_result
from retrieval.payload import ChunkPayload

REPO = Path(__file__).resolve().parent.parent
SOURCE = "docs"
TENANT = "acme"
CHUNK_CHARS, OVERLAP_CHARS = 300, 60  # small chunks: a small document still has several
CRASH_PHASES = ("parse", "embed", "catalog_intent", "index_upsert", "stale_delete", "catalog_commit",
                "acl_update", "doc_delete")
FOLDERS = ("fin", "hr", "eng", "legal", "all")
PRINCIPALS = ("group:finance", "group:hr", "group:eng", "group:legal", "group:exec", "tenant:acme",
              "user:alice", "user:bob", "user:carol", "role:auditor")
WORDS = ("revenue forecast budget audit travel policy hotel invoice ledger quarter board hiring roadmap "
         "release incident contract privacy merger salary training vendor customer pipeline margin "
         "headcount compliance security backlog launch pricing renewal churn").split()
NO_SERVER = "http://127.0.0.1:9"  # the CLI submits to a server when the shard is locked: never ours


# -- the source tree -----------------------------------------------------------------------------


class Tree:
    """A folder of small md/txt documents and its ``acl.toml``, mutated between runs."""

    def __init__(self, root: Path, rng: random.Random) -> None:
        self.root = root
        self.rng = rng
        self.files: dict[str, tuple[int, int]] = {}  # rel path -> (version, paragraphs)
        self.folders: dict[str, dict[str, list[str]]] = {}
        self.entries: dict[str, dict[str, list[str]]] = {}  # per-file manifest entries
        self._next = 0

    # content
    def create(self, n: int) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for folder in FOLDERS:
            # the folder exists even while empty: a manifest entry for a missing folder is an error
            (self.root / folder).mkdir(exist_ok=True)
            self.folders[folder] = {"allow": self._principals(1, 2)}
        for _ in range(n):
            self.add()
        self.write_manifest()

    def add(self) -> str:
        folder = self.rng.choice(FOLDERS)
        rel = f"{folder}/doc-{self._next:04d}.{self.rng.choice(('md', 'txt'))}"
        self._next += 1
        self.files[rel] = (0, self.rng.randint(1, 8))
        self._write(rel)
        return rel

    def edit(self, rel: str, paragraphs: int | None = None) -> None:
        version, _ = self.files[rel]
        self.files[rel] = (version + 1, paragraphs if paragraphs is not None else self.rng.randint(1, 8))
        self._write(rel)

    def delete(self, rel: str) -> None:
        del self.files[rel]
        self.entries.pop(rel, None)
        (self.root / rel).unlink()

    def _write(self, rel: str) -> None:
        version, paragraphs = self.files[rel]
        rng = random.Random(f"{rel}:{version}")

        def sentence() -> str:
            words = [rng.choice(WORDS) for _ in range(rng.randint(8, 16))]
            return " ".join(words).capitalize() + f" {rel.split('/')[-1].split('.')[0]}v{version}."

        paras = [" ".join(sentence() for _ in range(rng.randint(1, 3))) for _ in range(paragraphs)]
        title = f"{rng.choice(WORDS).title()} {rng.choice(WORDS)} report"
        if rel.endswith(".md"):
            body = f"# {title}\n\n" + "\n\n".join(
                (f"## Part {i}\n\n{p}" if i and i % 3 == 0 else p) for i, p in enumerate(paras))
        else:
            body = f"{title}\n\n" + "\n\n".join(paras)
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body + "\n")

    # permissions
    def _principals(self, lo: int, hi: int) -> list[str]:
        return sorted(self.rng.sample(PRINCIPALS, self.rng.randint(lo, hi)))

    def change_acl(self, keep: frozenset[str] | set[str] = frozenset()) -> None:
        """Manifest changes until the ACL of at least one document outside ``keep`` changed."""
        for _ in range(50):
            before = self.acls()
            kind = self.rng.choice(("folder_allow", "folder_deny", "file_allow", "file_deny", "file_clear"))
            if kind.startswith("folder"):
                entry = self.folders[self.rng.choice(FOLDERS)]
                if kind == "folder_allow":
                    entry["allow"] = self._principals(1, 3)
                else:
                    entry["deny"] = [] if entry.get("deny") else self._principals(1, 1)
            elif kind == "file_clear" and self.entries:
                del self.entries[self.rng.choice(sorted(self.entries))]
            elif self.files:
                entry = self.entries.setdefault(self.rng.choice(sorted(self.files)), {})
                entry["allow" if kind == "file_allow" else "deny"] = self._principals(1, 2)
            self.write_manifest()
            after = self.acls()
            if any(after[rel] != acl for rel, acl in before.items() if rel not in keep):
                return

    def acls(self) -> dict[str, Any]:
        from ingest.manifest import AclManifest

        manifest = AclManifest.load(self.root)
        return {rel: manifest.acl_for(rel) for rel in self.files}

    def write_manifest(self) -> None:
        def entry(head: str, values: dict[str, list[str]]) -> list[str]:
            lines = [head]
            for key in ("allow", "deny"):
                if key in values and (key == "allow" or values[key]):
                    lines.append(f"{key} = {json.dumps(values[key])}")
            return lines if len(lines) > 1 else []

        lines: list[str] = []
        for folder, values in sorted(self.folders.items()):
            lines += entry(f'[folders."{folder}"]', values)
        for rel, values in sorted(self.entries.items()):
            lines += entry(f'[files."{rel}"]', values)
        (self.root / "acl.toml").write_text("\n".join(lines) + "\n")

    def manifest_text(self) -> str:
        return (self.root / "acl.toml").read_text()

    def restore_manifest(self, text: str) -> None:
        (self.root / "acl.toml").write_text(text)  # the in-memory entries only drive later changes

    # one mutation between runs
    def mutate(self, ensure: str | None, minimal: bool = False) -> list[str]:
        """Change the tree; ``ensure`` names a phase the next ingest must reach."""
        done: list[str] = []
        rels = sorted(self.files)
        if not minimal or ensure in ("parse", "embed", "catalog_intent", "index_upsert", "stale_delete",
                                     "catalog_commit", "random", None):
            for rel in self.rng.sample(rels, min(len(rels), self.rng.randint(1, 4 if not minimal else 2))):
                self.edit(rel)
                done.append(f"edit {rel}")
            big = [r for r in sorted(self.files) if self.files[r][1] >= 4]
            if big:  # one document shrinks, so the write has leftover chunks to delete
                rel = self.rng.choice(big)
                self.edit(rel, self.rng.randint(1, 2))
                done.append(f"shrink {rel}")
        if ensure == "acl_update" or (not minimal and self.rng.random() < 0.4):
            # an ACL-only change needs a document whose content this mutation left alone
            self.change_acl({c.split(" ", 1)[1] for c in done})
            done.append("acl")
        if ensure == "doc_delete" or (not minimal and self.rng.random() < 0.3) or len(self.files) > 55:
            for rel in self.rng.sample(sorted(self.files), self.rng.randint(1, 2)):
                self.delete(rel)
                done.append(f"delete {rel}")
        if not minimal and (self.rng.random() < 0.3 or len(self.files) < 30):
            for _ in range(self.rng.randint(1, 3)):
                done.append(f"add {self.add()}")
        self.write_manifest()
        return done


# -- launching and killing an ingestion process --------------------------------------------------


def _child_main(argv: list[str], env: dict[str, str], log_path: str) -> None:
    """Body of a forkserver child: the ``clearance`` CLI, output to a log file."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.update(env)
    sys.argv = ["clearance", *argv]
    from cli.main import run

    run()


class Child:
    """One ingestion process, forked from the forkserver or a fresh interpreter."""

    def __init__(self, launcher: str, argv: list[str], env: dict[str, str], log_path: Path,
                 ctx: Any) -> None:
        self.launcher = launcher
        self.started = time.monotonic()
        if launcher == "fork":
            self._proc = ctx.Process(target=_child_main, args=(argv, env, str(log_path)), daemon=True)
            self._proc.start()
            self.pid = int(self._proc.pid)
        else:
            self._log = open(log_path, "wb")
            self._popen = subprocess.Popen(  # noqa: S603 - our own interpreter and code
                [sys.executable, "-c", "from cli.main import run; run()", *argv], cwd=REPO,
                env={**os.environ, **env}, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
            self.pid = self._popen.pid
        try:  # a pidfd names this very process even after it exits: a kill can never hit a reused pid
            self._pidfd: int | None = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            self._pidfd = None

    def wait(self, timeout: float) -> int | None:
        """The exit status (negative: killed by that signal), or None if still running."""
        if self.launcher == "fork":
            self._proc.join(timeout)
            return self._proc.exitcode
        try:
            return self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> int:
        try:
            if self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            else:
                os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        code = self.wait(60)
        self.close()
        return -9 if code is None else code

    def close(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        if self.launcher != "fork" and not self._log.closed:
            self._log.close()

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started


# -- checks --------------------------------------------------------------------------------------


@dataclass
class Tally:
    lost: int = 0
    duplicated: int = 0
    orphaned: int = 0
    acl_mismatches: int = 0
    stale_payloads: int = 0
    rows_left_writing: int = 0
    source_mismatches: int = 0
    reference_mismatches: int = 0
    resume_errors: int = 0
    process_failures: int = 0  # an ingestion process that ended other than by our SIGKILL or cleanly
    chunks_checked: int = 0
    documents_checked: int = 0
    violations: list[str] = field(default_factory=list)

    def flag(self, kind: str, n: int, message: str) -> None:
        if n:
            setattr(self, kind, getattr(self, kind) + n)
            self.violations.append(message)


def all_points(services: Any) -> list[Any]:
    """Every point of the tenant (a scroll), to find orphans the catalog does not name."""
    from retrieval.scope_filter import tenant_filter

    size = services.index.size()
    return services.index.scroll(tenant_filter(TENANT), limit=size + 1000)


def check_store(services: Any, root: Path, tally: Tally, label: str) -> None:
    """Catalog vs index, and catalog vs the source tree, after a resume."""
    from ingest.sources import FilesystemSource, content_hash

    rows = list(services.catalog.documents())
    writing = [r.key for r in rows if r.state != "indexed" or json.loads(r.pending_ids)]
    tally.flag("rows_left_writing", len(writing), f"{label}: rows left writing: {writing[:5]}")
    ids = [pid for r in rows for pid in r.ids]
    tally.flag("duplicated", len(ids) - len(set(ids)), f"{label}: chunk ids named by two catalog rows")
    points = all_points(services)
    size = services.index.size()
    tally.flag("orphaned", size - len(points), f"{label}: {size - len(points)} points outside the tenant")
    by_id = {p.id: p for p in points}
    lost = [pid for pid in ids if pid not in by_id]
    orphans = [pid for pid in by_id if pid not in set(ids)]
    tally.flag("lost", len(lost), f"{label}: {len(lost)} catalog chunks missing from the index")
    tally.flag("orphaned", len(orphans), f"{label}: {len(orphans)} index points no catalog row names: "
               f"{sorted({ChunkPayload.from_index(by_id[p].payload).doc_key for p in orphans})[:5]}")
    payloads = {p.id: ChunkPayload.from_index(p.payload) for p in points}
    positions = Counter((c.doc_key, c.chunk_index) for c in payloads.values())
    dup = sum(n - 1 for n in positions.values() if n > 1)
    tally.flag("duplicated", dup, f"{label}: {dup} (document, chunk) positions held by two points")
    acl_bad, stale = [], []
    for r in rows:
        acl = r.acl
        for i, pid in enumerate(r.ids):
            p = by_id.get(pid)
            if p is None:
                continue
            tally.chunks_checked += 1
            c = payloads[pid]
            if c.acl != acl:
                acl_bad.append(r.key)
            if (c.doc_key, c.chunk_index, c.content_hash) != (r.key, i, r.content_hash):
                stale.append(r.key)
    tally.flag("acl_mismatches", len(acl_bad), f"{label}: index ACL differs from the catalog's for "
               f"{len(acl_bad)} chunks of {sorted(set(acl_bad))[:5]}")
    tally.flag("stale_payloads", len(stale), f"{label}: {len(stale)} chunks whose payload is not their row's "
               f"current content: {sorted(set(stale))[:5]}")
    # The catalog reflects the tree as it is now.
    src = FilesystemSource(root, SOURCE)
    expected = {f"{TENANT}/{SOURCE}/{d.doc_id}": d for d in src.documents()}
    by_key = {r.key: r for r in rows}
    tally.documents_checked += len(rows)
    bad = sorted(set(expected) ^ set(by_key))
    for key in set(expected) & set(by_key):
        d, r = expected[key], by_key[key]
        if r.content_hash != content_hash(d.content) or r.acl != d.acl or not r.ids:
            bad.append(key)
    tally.flag("source_mismatches", len(bad), f"{label}: catalog differs from the tree for {bad[:5]}")


def snapshot(services: Any) -> dict[str, Any]:
    """What a store holds, independent of when and how it was written."""
    points = {p.id: ChunkPayload.from_index(p.payload) for p in all_points(services)}
    out = {}
    for r in services.catalog.documents():
        chunks = []
        for pid in r.ids:
            c = points.get(pid)
            text, allow, deny = (c.text, c.acl.allow, c.acl.deny) if c is not None else ("None", frozenset(), frozenset())
            chunks.append((pid, hashlib.sha256(text.encode()).hexdigest()[:16], tuple(sorted(allow)), tuple(sorted(deny))))
        out[r.key] = (r.content_hash, tuple(sorted(r.acl.allow)), tuple(sorted(r.acl.deny)), tuple(chunks))
    return out


# -- the battery ---------------------------------------------------------------------------------


@dataclass
class CrashConfig:
    runs: int = 200
    seed: int = 20260
    docs: int = 40
    schedule: list[str] | None = None  # phases in order (else: shuffled cycles over every phase)
    random_share: int = 3  # random-time kills per cycle of the eight phases
    subprocess_every: int = 10  # every n-th run kills a fresh interpreter (0: never)
    reference_every: int = 10  # clean-ingest comparison every n runs, and after the last (0: last only)
    p_recover_kill: float = 0.3  # after a kill that left rows writing: kill the next run in recover()
    p_change_while_down: float = 0.25  # change the tree between the kill and the resume
    p_acl_revert: float = 0.5  # after a kill in acl_update: put the old manifest back before resuming
    minimal_mutations: bool = False  # only what the scheduled phase needs (fast tests)
    work_dir: Path | None = None
    log: Callable[[str], None] = print


def _settings(data_dir: Path, batch_docs: int = 256) -> Any:
    from core.settings import EmbedderSettings, IngestSettings, Settings, StorageSettings

    return Settings(storage=StorageSettings(data_dir=data_dir), embedder=EmbedderSettings(kind="hash"),
                    ingest=IngestSettings(chunk_chars=CHUNK_CHARS, chunk_overlap_chars=OVERLAP_CHARS,
                                          min_chunk_chars=0, batch_docs=batch_docs))


def _child_env(data_dir: Path, batch_docs: int, crash_at: str | None) -> dict[str, str]:
    env = {"CLEARANCE_STORAGE__DATA_DIR": str(data_dir), "CLEARANCE_EMBEDDER__KIND": "hash",
           "CLEARANCE_INGEST__CHUNK_CHARS": str(CHUNK_CHARS), "CLEARANCE_INGEST__CHUNK_OVERLAP_CHARS": str(OVERLAP_CHARS),
           "CLEARANCE_INGEST__BATCH_DOCS": str(batch_docs), "CLEARANCE_LOG_LEVEL": "WARNING",
           "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if crash_at:
        env["CLEARANCE_CRASH_AT"] = crash_at
    return env


def expected_reaches(data_dir: Path, root: Path, batch_docs: int) -> dict[str, int]:
    """How many times the next ingest will reach each crashpoint (mirrors ``Ingestor.sync``),
    so that the n of ``<phase>:<n>`` is drawn from what this run really does."""
    from ingest.sources import FilesystemSource, content_hash
    from store.catalog import Catalog

    counts = Counter()
    db = data_dir / "catalog.sqlite3"
    rows = {}
    if db.exists():
        catalog = Catalog(f"sqlite:///{db}")
        try:
            rows = {r.key: r for r in catalog.documents()}
        finally:
            catalog.close()
    for r in rows.values():
        if r.state == "writing":
            counts["recover"] += 1
            r.state, r.content_hash = "indexed", ""
    docs = list(FilesystemSource(root, SOURCE).documents())
    seen = set()
    for start in range(0, len(docs), batch_docs):
        writes = 0
        for d in docs[start:start + batch_docs]:
            key = f"{TENANT}/{SOURCE}/{d.doc_id}"
            seen.add(key)
            r = rows.get(key)
            if r is not None and r.content_hash == content_hash(d.content):
                counts["acl_update"] += int(r.acl != d.acl)
            else:
                counts["parse"] += 1
                writes += 1
        if writes:
            for phase in ("embed", "catalog_intent", "index_upsert", "stale_delete", "catalog_commit"):
                counts[phase] += 1
    counts["doc_delete"] = sum(1 for k in rows if k not in seen)
    return dict(counts)


def _wait_for_writing(child: Child, data_dir: Path, timeout: float) -> int | None:
    """Poll the catalog (every 5 ms, read-only queries beside the child's writes) until a row is
    ``writing``; None then, or the child's exit status if it ended first."""
    db = data_dir / "catalog.sqlite3"
    con = None
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            code = child.wait(0.005)
            if code is not None:
                return code
            try:
                if con is None and db.exists():
                    con = sqlite3.connect(str(db), timeout=0.1)
                if con is not None and con.execute("SELECT 1 FROM documents WHERE state = 'writing' LIMIT 1").fetchone():
                    return None
            except sqlite3.Error:  # not created yet, or busy: look again
                pass
        return None
    finally:
        if con is not None:
            con.close()


def _writing_rows(data_dir: Path) -> int:
    from store.catalog import Catalog

    db = data_dir / "catalog.sqlite3"
    if not db.exists():
        return 0
    catalog = Catalog(f"sqlite:///{db}")
    try:
        return sum(1 for r in catalog.documents() if r.state == "writing")
    finally:
        catalog.close()


def _schedule(cfg: CrashConfig, rng: random.Random) -> list[str]:
    if cfg.schedule is not None:
        return list(cfg.schedule)
    out: list[str] = []
    while len(out) < cfg.runs:
        cycle = list(CRASH_PHASES) + ["random"] * cfg.random_share
        rng.shuffle(cycle)
        out += cycle
    return out[:cfg.runs]


def _ingest(data_dir: Path, root: Path, batch_docs: int = 256, check: Callable[[Any], None] | None = None) -> Any:
    """A complete sync in this process (the same ``Ingestor.sync`` the CLI runs)."""
    from app.services import build_services
    from ingest.sources import FilesystemSource

    services = build_services(_settings(data_dir, batch_docs))
    try:
        report = services.ingestor.sync(FilesystemSource(root, SOURCE))
        if check is not None:
            check(services)
        return report
    finally:
        services.close()


def run_battery(cfg: CrashConfig) -> dict[str, Any]:
    """Run the battery; returns figures, violations and ``passed``."""
    started = time.monotonic()
    rng = random.Random(cfg.seed)
    own_dir = cfg.work_dir is None
    work = Path(tempfile.mkdtemp(prefix="clearance-crash-")) if own_dir else Path(cfg.work_dir)  # type: ignore[arg-type]
    work.mkdir(parents=True, exist_ok=True)
    data_dir, root, logs = work / "var", work / "docs", work / "logs"
    logs.mkdir(exist_ok=True)
    ctx = multiprocessing.get_context("forkserver")
    # (this module is not preloaded by name: as ``python -m battery.crash`` it is ``__main__``,
    # which the forkserver imports anyway)
    ctx.set_forkserver_preload(["cli.main", "app.services", "ingest.pipeline", "ingest.sources",
                                "retrieval.edge_index"])
    from ingest.sandbox import shared_pool

    shared_pool(_settings(data_dir).ingest).warm(wait=False)  # this process's parser, for the resumes
    tree = Tree(root, rng)
    tree.create(cfg.docs)
    tally = Tally()
    kills: Counter[str] = Counter()
    launchers: Counter[str] = Counter()
    extra = Counter()  # missed kills, random kills mid-write, reverts, ...
    estimate = {"fork": 3.5, "subprocess": 5.0}  # seconds a full run takes; refined as runs complete
    schedule = _schedule(cfg, rng)
    reference_checks = 0

    def launch(run: int, launcher: str, batch_docs: int, crash_at: str | None, tag: str) -> Child:
        argv = ["ingest", str(root), "--source", SOURCE, "--server", NO_SERVER, "--json"]
        launchers[launcher] += 1
        return Child(launcher, argv, _child_env(data_dir, batch_docs, crash_at), logs / f"run-{run:04d}-{tag}.log", ctx)

    def verdict(code: int | None, child: Child, run: int, tag: str) -> bool:
        """True when the child died of SIGKILL; a clean exit is a miss, anything else a violation."""
        child.close()
        if code == -signal.SIGKILL:
            return True
        if code == 0:
            estimate[child.launcher] = 0.7 * estimate[child.launcher] + 0.3 * child.seconds
            extra["missed_kills"] += 1
            return False
        log_text = (logs / f"run-{run:04d}-{tag}.log").read_text(errors="replace")[-1500:]
        tally.flag("process_failures", 1, f"run {run}: ingestion process exited {code}: {log_text}")
        return False

    for run, phase in enumerate(schedule):
        t0 = time.monotonic()
        manifest_before = tree.manifest_text()
        changes = tree.mutate(phase, cfg.minimal_mutations) if run else ["initial tree"]
        batch_docs = rng.choice((3, 5, 8, 16, 256))
        launcher = "subprocess" if cfg.subprocess_every and run % cfg.subprocess_every == cfg.subprocess_every - 1 \
            else "fork"
        note = ""
        if phase == "random" and rng.random() < 0.5:  # at any moment of the process's life
            child = launch(run, launcher, batch_docs, None, "kill")
            delay = rng.uniform(0.05, estimate[launcher])
            code = child.wait(delay)
            if code is None:
                code = child.kill()
            landed = verdict(code, child, run, "kill")
            note = f"after {delay:.2f} s"
        elif phase == "random":  # most of a run is start-up and parsing: this one lands inside a write
            child = launch(run, launcher, batch_docs, None, "kill")
            delay = rng.uniform(0.0, 0.015)
            code = _wait_for_writing(child, data_dir, 120)
            if code is None:
                code = child.wait(delay)  # the write is in flight: kill it a moment later
            if code is None:
                code = child.kill()
            landed = verdict(code, child, run, "kill")
            extra["random_kills_timed_from_a_write"] += int(landed)
            note = f"write seen + {delay * 1000:.0f} ms"
        else:
            reach = expected_reaches(data_dir, root, batch_docs).get(phase, 0)
            if not reach:  # the mutation could not make this phase reachable: a random kill instead
                extra["unreachable_phase"] += 1
                phase = "random"
                child = launch(run, launcher, batch_docs, None, "kill")
                code = child.wait(rng.uniform(0.05, estimate[launcher]))
                if code is None:
                    code = child.kill()
            else:
                n = rng.randint(1, reach)
                note = f"{phase}:{n} of {reach}"
                child = launch(run, launcher, batch_docs, f"{phase}:{n}", "kill")
                code = child.wait(120)
                if code is None:
                    code = child.kill()
                    tally.violations.append(f"run {run}: crashpoint {phase}:{n} never fired in 120 s")
            landed = verdict(code, child, run, "kill")
        writing = _writing_rows(data_dir) if landed else 0
        if landed:
            kills[phase] += 1
            extra["kills_leaving_rows_writing"] += int(writing > 0)
            if phase == "random":
                extra["random_kills_mid_write"] += int(writing > 0)
        # A second crash, inside recover(), before anyone finished the first one's recovery.
        if writing and rng.random() < cfg.p_recover_kill:
            k = rng.randint(1, writing)
            second = launch(run, "fork", batch_docs, f"recover:{k}", "recover")
            code = second.wait(120)
            if code is None:
                code = second.kill()
            if verdict(code, second, run, "recover"):
                kills["recover"] += 1
                note += f"; recover:{k} of {writing}"
        # The source moves on while nothing runs.
        if phase == "acl_update" and landed and "acl" in changes and rng.random() < cfg.p_acl_revert:
            tree.restore_manifest(manifest_before)
            extra["acl_reverted_while_down"] += 1
            note += "; manifest reverted"
        elif rng.random() < cfg.p_change_while_down:
            tree.mutate(None)
            extra["changed_while_down"] += 1
            note += "; changed while down"
        # Resume to completion, then check.
        label = f"run {run} ({phase}{', ' + note if note else ''})"
        try:
            report = _ingest(data_dir, root, rng.choice((4, 16, 256)),
                             check=lambda s, label=label: check_store(s, root, tally, label))
            if report.errors:
                tally.flag("resume_errors", len(report.errors), f"{label}: resume errors {report.errors[:3]}")
        except Exception as exc:  # noqa: BLE001 - a failed resume is a finding, not a crash of the battery
            tally.flag("resume_errors", 1, f"{label}: resume failed: {type(exc).__name__}: {exc}")
            report = None
        last = run == len(schedule) - 1
        if last or (cfg.reference_every and run % cfg.reference_every == cfg.reference_every - 1):
            reference_checks += 1
            ref_dir = work / f"reference-{run}"
            mine: dict[str, Any] = {}
            theirs: dict[str, Any] = {}
            try:
                again = _ingest(data_dir, root, check=lambda s: mine.update(snapshot(s)))
                changed = {k: v for k, v in again.counts.items() if k != "unchanged"}
                tally.flag("resume_errors", int(bool(changed)), f"{label}: a second sync still changed {changed}")
                _ingest(ref_dir, root, check=lambda s: theirs.update(snapshot(s)))
                diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            except Exception as exc:  # noqa: BLE001
                diff = [f"comparison failed: {type(exc).__name__}: {exc}"]
            shutil.rmtree(ref_dir, ignore_errors=True)
            tally.flag("reference_mismatches", len(diff), f"{label}: differs from a clean ingest for {diff[:5]}")
        for f in logs.glob(f"run-{run:04d}-*.log"):
            f.unlink()
        counts = report.counts if report is not None else {}
        cfg.log(f"run {run + 1}/{len(schedule)} {launcher:10s} {'killed' if landed else 'missed'} "
                f"{phase:14s} {note:40s} resume {dict(sorted(counts.items()))} "
                f"[{time.monotonic() - t0:.1f} s, {len(tally.violations)} violations]")

    figures = {
        "runs": len(schedule),
        "kills": sum(kills.values()),
        "kills_by_phase": {p: kills.get(p, 0) for p in (*CRASH_PHASES, "recover", "random")},
        "random_kills_timed_from_a_write": extra["random_kills_timed_from_a_write"],
        "random_kills_mid_write": extra["random_kills_mid_write"],
        "kills_leaving_rows_writing": extra["kills_leaving_rows_writing"],
        "missed_kills": extra["missed_kills"],
        "unreachable_phase": extra["unreachable_phase"],
        "launchers": dict(launchers),
        "acl_reverted_while_down": extra["acl_reverted_while_down"],
        "changed_while_down": extra["changed_while_down"],
        "lost": tally.lost,
        "duplicated": tally.duplicated,
        "orphaned": tally.orphaned,
        "acl_mismatches": tally.acl_mismatches,
        "stale_payloads": tally.stale_payloads,
        "rows_left_writing": tally.rows_left_writing,
        "source_mismatches": tally.source_mismatches,
        "resume_errors": tally.resume_errors,
        "process_failures": tally.process_failures,
        "reference_checks": reference_checks,
        "reference_mismatches": tally.reference_mismatches,
        "chunks_checked": tally.chunks_checked,
        "documents_checked": tally.documents_checked,
        "documents_final": len(tree.files),
        "wall_s": round(time.monotonic() - started, 1),
    }
    bad = sum(figures[k] for k in ("lost", "duplicated", "orphaned", "acl_mismatches", "stale_payloads",
                                   "rows_left_writing", "source_mismatches", "resume_errors", "process_failures",
                                   "reference_mismatches"))
    phases_hit = all(kills.get(p, 0) for p in set(schedule) - {"random"})  # every phase scheduled was killed
    passed = bad == 0 and not tally.violations and figures["kills"] > 0 and tally.chunks_checked > 0 and phases_hit
    if not phases_hit:
        tally.violations.append(f"a phase was never killed: {figures['kills_by_phase']}")
    if own_dir and passed:
        shutil.rmtree(work, ignore_errors=True)
    return {"passed": passed, "figures": figures, "violations": tally.violations, "work_dir": str(work)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m battery.crash", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=20260)
    parser.add_argument("--docs", type=int, default=40)
    parser.add_argument("--subprocess-every", type=int, default=10)
    parser.add_argument("--reference-every", type=int, default=10)
    args = parser.parse_args(argv)
    started = time.time()
    result = run_battery(CrashConfig(runs=args.runs, seed=args.seed, docs=args.docs,
                                     subprocess_every=args.subprocess_every, reference_every=args.reference_every))
    command = "python -m battery.crash " + " ".join(argv if argv is not None else sys.argv[1:])
    path = write_result("crash", passed=result["passed"], figures=result["figures"], command=command.strip(),
                        violations=result["violations"], started=started)
    print(json.dumps(result["figures"], indent=1))
    for v in result["violations"][:20]:
        print("VIOLATION:", v, file=sys.stderr)
    print(f"{'PASS' if result['passed'] else 'FAIL'}: {path}" + ("" if result["passed"] else f" (kept {result['work_dir']})"))
    return exit_code(result["passed"])


if __name__ == "__main__":
    sys.exit(main())
