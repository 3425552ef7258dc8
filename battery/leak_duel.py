"""Leak duel (issue #9): a random corpus with random ACLs, ingested through the push API of the
real server, against a crowd of principals, every read path compared with an oracle.

``python -m battery.leak_duel [--principals 200 --docs 5000 --seed N]``

Corpus: ``--docs`` documents in tenant ``acme`` pushed one by one with ``PUT
/v1/sources/{source}/documents/{id}`` (push API → ``Ingestor`` → parser sandbox → chunker → hash
embedder → Qdrant Edge + SQLite catalog), plus a tenth as many in tenant ``globex`` (half of
them under the same source and id as an ``acme`` document) written by a second ``Ingestor``.
ACLs: allow lists of groups (from 1,000), users and roles, tenant-wide documents, documents
with an empty allow list, documents that allow only the *other* tenant, deny entries on
groups, users and whole tenants, and user-level denies aimed at users who would otherwise see
the document. Sources ``wiki``, ``crm``, ``mail`` and ``archive``; ``archive`` has a maximum
age of 365 days and modification times go back four years. After the pushes the index is
optimised (as a sync job does), so filtered HNSW is on the read path.

Principals: users with 0, 1, 50 and 500 groups (some with roles), some hit by user-level
denies, ``globex`` users whose subjects and groups collide with ``acme`` ACLs, admins of both
tenants, a token without the search scope (403 on every read), tokens naming a tenant the
issuer may not assert and a token with 600 groups (401 on every read).

Agent paths (issue 14, ``battery.agent_paths``): one exactly known bm25 answer per caller walked
page by page with ``next_cursor``, plain and ``group_by: "document"`` (no repeats across pages),
and the MCP ``search`` and ``fetch`` tools with the SDK's client.

Read paths, per principal, over HTTP: ``whoami``; ``/v1/chunks/count``; ``/v1/search`` in
bm25, dense and hybrid mode; search with ``explain``; ``/v1/documents/{source}/{id}`` (the
document and its chunks); ``/v1/admin/documents`` (admins: their tenant's documents; others:
403); and, at the end, ``/v1/admin/audit/documents/…`` (who was handed a document).

``top_k`` is capped at 100 by the API, below the corpus, so:

- **bm25** enumerates the whole visible set: every title carries a term ``bucket<N>`` (≤ 90
  chunks per bucket); a caller's buckets are packed into queries whose oracle answer is ≤ 90
  chunks, so each answer must equal the oracle exactly (a leak has room to show: 10 spare
  slots) and the union over the queries is every chunk the caller may see;
- **dense and hybrid** (and bm25 on a term in every chunk) with ``top_k`` 100, with and
  without ``max_age`` and caller filters (``sources``, ``modified_after``): every hit must be
  entitled under that query's narrowing, and the answer must hold ``min(100, visible)`` hits;
  dense probes with a visible document's own text must find it (top 10), probes with a hidden
  document's text must not;
- **count** is exact; **document reads** are sampled so that every document is read by at
  least one caller who may see it and one who may not (near misses first: denied, stale, the
  other tenant's document under the same id); chunks must match the oracle's ids in order.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from battery import agent_paths
from battery.duel_corpus import ADMIN, ARCHIVE, COMMON, DAY, FOREIGN, MODES, TENANT, UNTRUSTED, Doc, Duel, DuelEnv, Principal, utcnow
from battery.result import exit_code, write_result

SOURCES = ("wiki", "crm", "mail", ARCHIVE)
SOURCE_WEIGHTS = (40, 25, 15, 20)
N_GROUPS = 1000
ROLES = ("auditor", "legal", "service")
BUCKET_CHUNKS = 90  # predicted chunks per title term; a caller's bm25 query expects ≤ this many
MAX_AGE_S = 180 * DAY  # the max_age variant of the probes
FAR_AGE_DAYS = 1500
WORDS = ("revenue forecast budget policy incident merger roadmap contract audit salary travel expense "
         "quarterly planning vendor invoice compliance security review hiring onboarding benefits pension "
         "customer renewal pipeline churn pricing discount margin supplier logistics warehouse inventory "
         "shipment patent license litigation settlement board minutes strategy acquisition integration "
         "migration outage postmortem latency capacity datacenter network firewall encryption password "
         "training workshop offsite retreat feedback promotion bonus equity vesting payroll headcount "
         "reorganisation office lease facilities catering parking badge visitor safety evacuation drill "
         "sustainability emissions recycling energy solar grant research prototype experiment laboratory "
         "sample specimen protocol trial regulatory filing submission approval launch campaign brand "
         "website newsletter press release interview analyst investor dividend treasury loan credit").split()


def group(n: int) -> str:
    return f"g{n:04d}"


# -- generation ---------------------------------------------------------------------------------


def make_principals(n: int, rng: random.Random) -> list[Principal]:
    """``n`` principals: fixed special cases, ~10 % ``globex``, the rest ``acme`` users with
    0, 1, 50 or 500 groups."""
    specials = [
        Principal("admin-a", TENANT, (), scopes=(ADMIN,), kind="admin"),
        Principal("admin-b", TENANT, tuple(group(g) for g in rng.sample(range(N_GROUPS), 50)), scopes=(ADMIN,), kind="admin"),
        Principal("admin-g", FOREIGN, (), scopes=(ADMIN,), kind="admin"),
        Principal("noscope", TENANT, (group(0), group(1)), scopes=(), kind="no search scope"),
        Principal("u0000", UNTRUSTED, (group(0),), kind="untrusted tenant", refused_code="tenant_not_allowed"),
        Principal("x-initech", UNTRUSTED, (), kind="untrusted tenant", refused_code="tenant_not_allowed"),
        Principal("overage", TENANT, tuple(group(g) for g in range(600)), kind="group overage", refused_code="group_overage"),
    ]
    rest = max(n - len(specials), 4)
    n_foreign = max(2, rest // 10)
    out = list(specials)
    sizes = (0, 1, 50, 500)
    weights = (20, 30, 35, 15)
    for i in range(rest - n_foreign):
        k = sizes[i % 4] if i < 4 else rng.choices(sizes, weights)[0]  # each size at least once
        roles = (rng.choice(ROLES),) if rng.random() < 0.1 else ()
        out.append(Principal(f"u{i:04d}", TENANT, tuple(group(g) for g in rng.sample(range(N_GROUPS), k)), roles,
                             kind=f"{k} groups"))
    acme_users = [p for p in out if p.tenant == TENANT and p.kind.endswith("groups")]
    for j in range(n_foreign):
        k = rng.choice(sizes)
        # the same subject as an acme user (user:<sub> collides), groups overlapping acme ACLs
        sub = acme_users[j % len(acme_users)].sub if j % 2 == 0 else f"f{j:04d}"
        out.append(Principal(sub, FOREIGN, tuple(group(g) for g in rng.sample(range(N_GROUPS), k)), kind="globex"))
    return out[:max(n, len(specials) + 4)]


def _age_days(rng: random.Random) -> float:
    while True:  # keep modification times away from every cutoff (run time, clock skew)
        d = rng.uniform(0, FAR_AGE_DAYS)
        if all(abs(d - c) > 3 for c in (MAX_AGE_S / DAY, 365, 720)):
            return d


def _sentence(rng: random.Random, uniq: str | None = None) -> str:
    words = rng.choices(WORDS, k=rng.randint(8, 14))
    if uniq:
        words.insert(rng.randint(0, len(words)), uniq)
    return " ".join(words).capitalize() + "."


def _text(rng: random.Random, uniq: str, paragraphs: int) -> str:
    if paragraphs == 1:
        return " ".join(_sentence(rng, uniq if i == 0 else None) for i in range(rng.randint(3, 5)))
    return "\n\n".join(" ".join(_sentence(rng, uniq if i == 0 else None) for i in range(rng.randint(10, 12)))
                       for _ in range(paragraphs))


def _acl(rng: random.Random, tenant: str, users: list[str]) -> tuple[set[str], set[str]]:
    other = FOREIGN if tenant == TENANT else TENANT
    r = rng.random()
    allow: set[str] = set()
    if r < 0.04:
        pass  # empty allow list: nobody
    elif r < 0.08:
        allow = {f"tenant:{tenant}"}  # everyone in the tenant
    elif r < 0.09:
        allow = {f"tenant:{other}"}  # only the other tenant: nobody here, nobody there
    else:
        for _ in range(rng.choice((1, 1, 2, 2, 3, 4))):
            x = rng.random()
            if x < 0.7:
                allow.add(f"group:{group(rng.randrange(N_GROUPS))}")
            elif x < 0.95:
                allow.add(f"user:{rng.choice(users)}")
            else:
                allow.add(f"role:{rng.choice(ROLES)}")
        if rng.random() < 0.03:
            allow.add(f"tenant:{tenant}")
    deny: set[str] = set()
    if rng.random() < 0.12:
        for _ in range(rng.choice((1, 1, 2))):
            x = rng.random()
            if x < 0.5:
                deny.add(f"group:{group(rng.randrange(N_GROUPS))}")
            elif x < 0.95:
                deny.add(f"user:{rng.choice(users)}")
            else:
                deny.add(f"tenant:{tenant}")  # deny everyone
    return allow, deny


def make_docs(n_docs: int, principals: list[Principal], rng: random.Random, now: datetime) -> list[Doc]:
    users = sorted({p.sub for p in principals} | {f"u{i:04d}" for i in range(len(principals) * 2)})
    specs: list[tuple[str, str, str, int]] = []  # tenant, source, doc id, paragraphs
    for i in range(n_docs):
        specs.append((TENANT, rng.choices(SOURCES, SOURCE_WEIGHTS)[0], f"d{i:05d}",
                      1 if rng.random() < 0.85 else rng.randint(2, 4)))
    for j in range(max(n_docs // 10, 2)):
        if j % 2 == 0:  # the same source and id as an acme document
            t, src, did, _ = specs[rng.randrange(n_docs)]
        else:
            src, did = rng.choices(SOURCES, SOURCE_WEIGHTS)[0], f"f{j:05d}"
        specs.append((FOREIGN, src, did, 1 if rng.random() < 0.85 else rng.randint(2, 4)))
    specs = list({(t, s, d): (t, s, d, n) for t, s, d, n in specs}.values())
    rng.shuffle(specs)
    docs: list[Doc] = []
    bucket, load = 0, 0
    for n, (tenant, source, doc_id, paragraphs) in enumerate(specs):
        predicted = paragraphs + (1 if paragraphs > 1 else 0)
        if load + predicted > BUCKET_CHUNKS:
            bucket, load = bucket + 1, 0
        load += predicted
        allow, deny = _acl(rng, tenant, users)
        uniq = f"uq{tenant[0]}{n:05d}"
        docs.append(Doc(tenant, source, doc_id, frozenset(allow), frozenset(deny),
                        now - timedelta(days=_age_days(rng)), f"Memo {doc_id} bucket{bucket}",
                        _text(rng, uniq, paragraphs), bucket=bucket))
    # User-level denies aimed at users who would otherwise see the document (deny beats allow).
    targets = [p for p in principals if p.can_search and p.kind.endswith("groups")]
    for p in rng.sample(targets, max(1, len(targets) // 5)):
        mine = [d for d in docs if d.tenant == p.tenant and d.allow & p.principals and not d.deny & p.principals]
        for d in rng.sample(mine, min(len(mine), 8)):
            d.deny = d.deny | {f"user:{p.sub}"}
            if rng.random() < 0.3:
                d.allow = d.allow | {f"user:{p.sub}"}  # allowed by name and denied by name
    return docs


# -- ingestion ----------------------------------------------------------------------------------


def ingest(env: DuelEnv, docs: list[Doc], duel: Duel, progress: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    outcomes: Counter = Counter()
    acme = [d for d in docs if d.tenant == TENANT]
    for i, d in enumerate(acme):
        r = env.put(d)
        if r.status_code != 200:
            duel.violations.append(f"ingest: PUT {d.key}: {r.status_code} {r.text[:200]}")
            outcomes["http_error"] += 1
            continue
        body = r.json()
        outcomes[body["outcome"]] += 1
        d.chunks = int(body["chunks"])
        if progress and (i + 1) % 500 == 0:
            print(f"  pushed {i + 1}/{len(acme)} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    push_s = time.perf_counter() - t0
    foreign = [d for d in docs if d.tenant == FOREIGN]
    for k in range(0, len(foreign), 256):
        batch = foreign[k:k + 256]
        for d, res in zip(batch, env.foreign_apply(batch)):
            if isinstance(res, Exception):
                duel.violations.append(f"ingest: {d.key}: {res}")
                outcomes["failed"] += 1
            else:
                outcomes[res[0]] += 1
                d.chunks = res[1]
    t1 = time.perf_counter()
    env.services.index.optimize()  # what a sync job does at its end: HNSW on the read path
    optimize_s = time.perf_counter() - t1
    failed = sum(1 for d in docs if d.chunks == 0)
    chunks = sum(d.chunks for d in docs)
    index_points = env.services.index.size()
    if failed or index_points != chunks or outcomes["added"] != len(docs):
        duel.violations.append(f"ingest: {failed} documents without chunks, {index_points} points for {chunks} chunks, "
                               f"outcomes {dict(outcomes)}")
    return {"push_seconds": round(push_s, 1), "push_docs_per_s": round(len(acme) / max(push_s, 1e-9), 1),
            "foreign_seconds": round(t1 - t0 - push_s, 1), "optimize_seconds": round(optimize_s, 1),
            "outcomes": dict(outcomes), "index_points": index_points, "oracle_chunks": chunks}


# -- reads --------------------------------------------------------------------------------------


def pack(buckets: dict[int, list[str]], cap: int) -> list[list[int]]:
    """Group bucket numbers so that each group's expected chunks stay ≤ ``cap``."""
    groups: list[list[int]] = []
    cur: list[int] = []
    load = 0
    for b in sorted(buckets):
        n = len(buckets[b])
        if cur and load + n > cap:
            groups.append(cur)
            cur, load = [], 0
        cur.append(b)
        load += n
    if cur:
        groups.append(cur)
    return groups


def plan_document_reads(docs: list[Doc], callers: list[Principal], visible: dict[str, set[str]], now: datetime,
                        rng: random.Random, extra: int) -> tuple[dict[str, list[tuple[Doc, bool]]], Counter]:
    """Every document is read by one caller who may see it (if any) and one who may not (a near
    miss when there is one); each caller then gets ``extra`` more random documents."""
    plan: dict[str, list[tuple[Doc, bool]]] = {p.label(): [] for p in callers}
    reasons: Counter = Counter()
    by_label = {p.label(): p for p in callers}
    for d in docs:
        yes = [p for p in callers if d.key in visible[p.label()]]
        no = [p for p in callers if d.key not in visible[p.label()]]
        if yes:
            plan[rng.choice(yes).label()].append((d, True))
        if no:
            near = [p for p in no if d.why_hidden(p, now) in ("denied", "stale", "other_tenant")]
            p = rng.choice(near or no)
            plan[p.label()].append((d, False))
            reasons[d.why_hidden(p, now)] += 1
    for label, items in plan.items():
        p = by_label[label]
        for d in rng.sample(docs, min(extra, len(docs))):
            items.append((d, d.key in visible[label]))
            if d.key not in visible[label]:
                reasons[d.why_hidden(p, now)] += 1
    return plan, reasons


def check_principal(duel: Duel, p: Principal, docs: list[Doc], by_id: dict[tuple[str, str, str], Doc],
                    vis_keys: set[str], plan: list[tuple[Doc, bool]], now: datetime, rng: random.Random) -> None:
    duel.whoami(p)
    if not p.can_search:  # refused everywhere: one request per path is enough to prove it
        duel.count(p, 0)
        for mode in MODES:
            duel.search(p, mode=mode, query=COMMON, allowed={})
        duel.search(p, mode="hybrid", query=COMMON, allowed={}, explain=True)
        for d in docs[:2]:
            duel.document(p, d.source, d.doc_id, None)
        duel.admin_list(p, set(), set())
        agent_paths.mcp(duel, p, COMMON, {}, set(), [])
        return
    mine = [d for d in docs if d.key in vis_keys]
    allowed = {cid: d for d in mine for cid in d.chunk_ids()}
    duel.count(p, len(allowed))

    # bm25: the whole visible set, bucket by bucket, packed
    buckets: dict[int, list[str]] = {}
    for d in mine:
        buckets.setdefault(d.bucket, []).extend(d.chunk_ids())
    all_buckets = sorted({d.bucket for d in docs})
    covered = set()
    for n, grp in enumerate(pack({b: buckets.get(b, []) for b in all_buckets}, 90)):
        must = {cid for b in grp for cid in buckets.get(b, [])}
        covered |= must
        query = " ".join(f"bucket{b}" for b in grp)
        duel.search(p, mode="bm25", query=query, allowed=allowed, must=must)
        if n == 0:  # the agent paths (issue 14) on one exactly known answer per caller
            agent_paths.paged(duel, p, query, allowed, must)
            agent_paths.paged(duel, p, query, allowed, must, group_by="document")
            reads = []
            for d, _ok in plan[:4]:
                target = by_id.get((p.tenant, d.source, d.doc_id))
                reads.append((d, target if target is not None and target.key in vis_keys else None))
            agent_paths.mcp(duel, p, query, allowed, must, reads)
    assert covered == set(allowed)

    # every mode, top_k 100, with and without narrowing
    fresh = {cid: d for cid, d in allowed.items() if d.visible_to(p, now, max_age_s=MAX_AGE_S)}
    after = now - timedelta(days=720)
    narrowed = {cid: d for cid, d in allowed.items()
                if d.visible_to(p, now, sources=frozenset({"wiki", ARCHIVE}), modified_after=after)}
    for mode in MODES:
        duel.search(p, mode=mode, query=f"{COMMON} {rng.choice(WORDS)}", allowed=allowed)
        duel.search(p, mode=mode, query=f"{COMMON} {rng.choice(WORDS)}", allowed=fresh, extra={"max_age": MAX_AGE_S})
        duel.search(p, mode=mode, query=f"{COMMON} {rng.choice(WORDS)}", allowed=narrowed,
                    extra={"sources": ["wiki", ARCHIVE], "modified_after": after.isoformat()})
    duel.search(p, mode="hybrid", query=f"{COMMON} bucket{rng.choice(all_buckets)}", allowed=allowed, explain=True)

    # dense probes: a visible document's own words find it; a hidden one's never come back
    # (title + first paragraph: the words of the document's first chunk, so cosine ~1 with it)
    for d in rng.sample(mine, min(2, len(mine))):
        duel.search(p, mode="dense", query=f"{d.title} {d.text.split(chr(10) * 2)[0]}", allowed=allowed, top_k=10,
                    must={d.chunk_ids()[0]})
    hidden = [d for d, ok in plan if not ok]
    for d in rng.sample(hidden, min(2, len(hidden))):
        for mode in ("dense", "hybrid"):
            duel.search(p, mode=mode, query=f"{d.title} {d.text.split(chr(10) * 2)[0]}", allowed=allowed, top_k=10)

    # document reads: the caller's tenant's document under that source and id, if visible
    for d, _ok in plan:
        target = by_id.get((p.tenant, d.source, d.doc_id))
        expected = target if target is not None and target.key in vis_keys else None
        duel.document(p, d.source, d.doc_id, expected)
    duel.admin_list(p, {d.key for d in docs if d.tenant == p.tenant},
                    {d.key for d in docs if d.tenant != p.tenant})


def run(n_principals: int = 200, n_docs: int = 5000, seed: int = 7, doc_extra: int = 10,
        data_dir: Path | None = None, progress: bool = False) -> tuple[bool, dict[str, Any], list[str]]:
    rng = random.Random(seed)
    started = time.perf_counter()
    now = utcnow()
    principals = make_principals(n_principals, rng)
    docs = make_docs(n_docs, principals, rng, now)
    tmp = Path(tempfile.mkdtemp(prefix="leak-duel-")) if data_dir is None else data_dir
    env = DuelEnv(tmp / "var")
    duel = Duel(env)
    try:
        ing = ingest(env, docs, duel, progress)
        docs = [d for d in docs if d.chunks > 0]  # a failed push is reported above, never an oracle entry
        by_id = {(d.tenant, d.source, d.doc_id): d for d in docs}
        t_reads = time.perf_counter()
        now = utcnow()
        visible = {p.label(): {d.key for d in docs if d.visible_to(p, now)} for p in principals}
        plan, reasons = plan_document_reads(docs, [p for p in principals if p.can_search], visible, now, rng, doc_extra)
        for i, p in enumerate(principals):
            check_principal(duel, p, docs, by_id, visible[p.label()], plan.get(p.label(), []), now, rng)
            if progress and (i + 1) % 20 == 0:
                print(f"  checked {i + 1}/{len(principals)} principals ({time.perf_counter() - t_reads:.0f} s, "
                      f"leaks {duel.totals()['leaks']}, misses {duel.totals()['misses']})", file=sys.stderr)
        # the audit trail, as each tenant's admin sees it
        by_hash = {p.phash: p for p in principals if p.can_search}
        for admin in [p for p in principals if p.is_admin]:
            own = [d for d in docs if d.tenant == admin.tenant]
            popular = sorted(own, key=lambda d: -sum(duel.handed.get(d.key, {}).values()))[:10]
            for d in popular + rng.sample(own, min(15, len(own))):
                duel.audit(admin, d, by_hash)
        reads_s = time.perf_counter() - t_reads
    finally:
        env.close()
        if data_dir is None:
            shutil.rmtree(tmp, ignore_errors=True)

    totals = duel.totals()
    chunks_by_doc = [d.chunks for d in docs]
    vis_sizes = sorted(sum(d.chunks for d in docs if d.key in visible[p.label()]) for p in principals if p.can_search)
    figures: dict[str, Any] = {
        "checks": totals["requests"], "items_compared": totals["items"], "leaks": totals["leaks"],
        "misses": totals["misses"], "errors": totals["errors"],
        "per_path": duel.per_path(),
        "documents": len(docs), "documents_acme": sum(d.tenant == TENANT for d in docs),
        "documents_globex": sum(d.tenant == FOREIGN for d in docs),
        "chunks": sum(chunks_by_doc), "multi_chunk_documents": sum(c > 1 for c in chunks_by_doc),
        "empty_allow_documents": sum(not d.allow for d in docs),
        "documents_with_deny": sum(bool(d.deny) for d in docs),
        "stale_archive_documents": sum(not d.fresh(now) for d in docs),
        "same_id_in_both_tenants": sum(1 for d in docs if d.tenant == FOREIGN and (TENANT, d.source, d.doc_id) in by_id),
        "bm25_buckets": len({d.bucket for d in docs}),
        "bm25_bucket_chunks_max": max(Counter(d.bucket for d in docs for _ in range(d.chunks)).values()),
        "principals": len(principals), "principals_by_kind": dict(Counter(p.kind for p in principals)),
        "visible_chunks_per_caller_min_median_max": [vis_sizes[0], vis_sizes[len(vis_sizes) // 2], vis_sizes[-1]]
        if vis_sizes else [],
        "hidden_document_reads_by_reason": dict(reasons),
        "ingest": ing, "read_seconds": round(reads_s, 1), "total_seconds": round(time.perf_counter() - started, 1),
        "seed": seed,
        "notes": "top_k is capped at 100: bm25 enumerates each caller's whole visible set with bucket-term "
                 "queries (answers compared exactly); dense/hybrid and bm25 on a common term are checked "
                 "for leaks and for min(100, visible) hits, with and without max_age and caller filters; "
                 "count is exact; every document is read by >= 1 caller who may see it and >= 1 who may not",
    }
    passed = totals["leaks"] == 0 and totals["misses"] == 0 and totals["errors"] == 0 and not any(
        v.startswith("ingest:") for v in duel.violations)
    return passed, figures, duel.violations


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m battery.leak_duel", description=__doc__.split("\n\n")[0])
    ap.add_argument("--principals", type=int, default=200)
    ap.add_argument("--docs", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--doc-extra", type=int, default=10, help="random document reads per caller on top of the plan")
    args = ap.parse_args(argv)
    for k, v in (("DO_NOT_TRACK", "1"), ("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1")):
        os.environ.setdefault(k, v)
    started = time.time()
    passed, figures, violations = run(args.principals, args.docs, args.seed, args.doc_extra, progress=True)
    cmd = f"python -m battery.leak_duel --principals {args.principals} --docs {args.docs} --seed {args.seed}"
    out = write_result("leak_duel", passed=passed, figures=figures, command=cmd, violations=violations, started=started)
    print(f"leak_duel: {'PASS' if passed else 'FAIL'}: {figures['checks']} checks, {figures['items_compared']} items, "
          f"{figures['leaks']} leaks, {figures['misses']} misses, {figures['errors']} errors "
          f"({figures['total_seconds']} s) -> {out}")
    for v in violations[:20]:
        print("  " + v)
    return exit_code(passed)


if __name__ == "__main__":
    sys.exit(main())
