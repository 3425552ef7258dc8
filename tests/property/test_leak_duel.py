"""Fast versions of the battery's leak duel and ingestion state machine (``battery/``, issue #9):
the same code at small scale, through the real server, pipeline, Edge index and SQLite catalog.

- leak duel: 20 principals (0/1/50/500 groups, user-level denies, the other tenant, admins, no
  search scope, refused tokens) × 300 documents (+30 in the other tenant), every read path
  against the oracle;
- state machine: 100 steps of grant / revoke / content edit / delete / ACL-only change /
  group membership (hypothesis and a seeded random walk, half each), every read path checked
  for five callers after every step;
- directory duel (issue #18): a random nested group graph (cycles, a chain deeper than the depth
  cap) pushed over SCIM, callers with token groups, with overage tokens, inactive and unknown to
  the directory; the oracle expands the graph itself (breadth-first, same depth cap), before and
  after SCIM changes (edges removed, a user deactivated).
"""

from __future__ import annotations

import hashlib
import random
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2

from api.app import create_app
from app.services import build_services
from auth.authenticator import INGEST
from battery import leak_duel, state_machine
from core.settings import DirectorySettings
from testkit.live_server import LiveServer
from testkit.sources import register_source
from tests.conftest import make_settings

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


# -- directory duel (issue #18) ------------------------------------------------------------------

SCIM_TOKEN = "duel-scim-" + "t" * 30
SCIM_AUTH = {"authorization": f"Bearer {SCIM_TOKEN}", "content-type": "application/scim+json"}
CORE = "urn:ietf:params:scim:schemas:core:2.0:"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
MAX_DEPTH = 4


@dataclass(frozen=True)
class Caller:
    sub: str
    token_groups: tuple[str, ...]
    overage: bool


class Graph:
    """The oracle's own copy of the directory: member -> the groups it is directly in."""

    def __init__(self) -> None:
        self.parents: dict[str, set[str]] = {}
        self.active: dict[str, bool] = {}

    def reach(self, start: set[str]) -> set[str]:
        """Groups reachable upwards from ``start`` in 1..MAX_DEPTH edges (shortest path)."""
        dist = {s: 0 for s in start}
        todo = deque(start)
        while todo:
            node = todo.popleft()
            if dist[node] == MAX_DEPTH:
                continue
            for p in self.parents.get(node, set()):
                if p not in dist:
                    dist[p] = dist[node] + 1
                    todo.append(p)
        return {n for n, d in dist.items() if d >= 1}

    def principals(self, c: Caller, users: set[str], groups: set[str]) -> set[str]:
        known = c.sub in users and self.active.get(c.sub, True)
        own = self.reach({f"u:{c.sub}"}) if known else set()
        if c.overage:
            names = own
        else:
            names = set(c.token_groups) | own | self.reach({g for g in c.token_groups if g in groups})
        return {"user:" + c.sub, "tenant:acme"} | {"group:" + g for g in names}


def _scim(http: httpx2.Client, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = http.request(method, "/scim/v2" + path, headers=SCIM_AUTH, json=body)
    assert r.status_code < 300, r.text
    return dict(r.json()) if r.content else {}


def test_leak_duel_directory_nested_groups_and_overage(tmp_path: Path) -> None:
    rng = random.Random(18)
    settings = make_settings(tmp_path, log_level="WARNING", directory=DirectorySettings(
        scim_token_sha256=hashlib.sha256(SCIM_TOKEN.encode()).hexdigest(), dev_issuer="merge", max_depth=MAX_DEPTH))
    services = build_services(settings)
    register_source(services, "wiki")
    dev = services.auth.dev
    assert dev is not None
    graph = Graph()
    groups = [f"dg{i}" for i in range(24)]  # directory groups
    token_only = [f"tg{i}" for i in range(4)]  # groups only tokens carry
    users = [f"u{i}@corp.example" for i in range(14)]
    for u in users:
        graph.active[u] = u == users[0] or rng.random() > 0.15
    members: dict[str, set[str]] = {g: set() for g in groups}  # group -> member keys ("u:<sub>" or group)
    for g in groups[:18]:  # random nesting, cycles allowed
        for child in rng.sample(groups[:18], 2):  # the chain below stays a chain
            if child != g:
                members[g].add(child)
    for a, b in zip(groups[18:], groups[19:]):  # a chain of 6: deeper than MAX_DEPTH
        members[b].add(a)
    members[groups[18]].add("u:" + users[0])
    for u in users[1:]:
        for g in rng.sample(groups[:18], rng.randint(0, 3)):
            members[g].add("u:" + u)
    callers = [Caller(u, tuple(rng.sample(groups + token_only, rng.randint(0, 2))), False) for u in users]
    callers += [Caller(u, (), True) for u in users[::3]]
    callers += [Caller("stranger@corp.example", ("dg3", "tg1"), False), Caller("ghost@corp.example", (), True)]
    try:
        with LiveServer(create_app(settings, services)) as srv, httpx2.Client(base_url=srv.url, timeout=120) as http:
            ids: dict[str, str] = {}
            for u in users:
                ids["u:" + u] = _scim(http, "POST", "/Users", {"schemas": [CORE + "User"], "userName": u,
                                                              "active": graph.active[u]})["id"]
            for g in groups:  # members that are groups are added once every group exists
                ids[g] = _scim(http, "POST", "/Groups", {"schemas": [CORE + "Group"], "displayName": g})["id"]
            for g in groups:
                if members[g]:
                    _scim(http, "PATCH", f"/Groups/{ids[g]}", {"schemas": [PATCH_OP], "Operations": [
                        {"op": "add", "path": "members", "value": [{"value": ids[m]} for m in sorted(members[g])]}]})
            etl = {"authorization": "Bearer " + dev.mint("etl", scopes=[INGEST])}
            pool = [f"group:{g}" for g in groups + token_only] + [f"user:{u}" for u in users]
            acls: dict[str, tuple[set[str], set[str]]] = {}
            for i in range(60):
                allow = set(rng.sample(pool, rng.randint(1, 2)))
                deny = {rng.choice(pool)} - allow if rng.random() < 0.2 else set()
                acls[f"doc{i:03d}"] = (allow, deny)
                r = http.put(f"/v1/sources/wiki/documents/doc{i:03d}", headers=etl, json={
                    "filename": f"doc{i:03d}.txt", "content": f"duelterm marker{i:03d} nested groups",
                    "acl": {"allow": sorted(allow), "deny": sorted(deny)}})
                assert r.status_code in (200, 201), r.text
            tokens = {c: dev.mint(c.sub, groups=[f"g{i}" for i in range(600)] if c.overage else list(c.token_groups))
                      for c in callers}

            def duel() -> tuple[int, int, int, int]:
                graph.parents = {}
                for g, ms in members.items():
                    for m in ms:
                        graph.parents.setdefault(m, set()).add(g)
                leaks = misses = checks = widened = 0
                for c in callers:
                    p = graph.principals(c, set(users), set(groups))
                    expected = {d for d, (allow, deny) in acls.items() if allow & p and not deny & p}
                    token_only_p = {"user:" + c.sub, "tenant:acme"} | ({"group:" + g for g in c.token_groups} if not c.overage else set())
                    widened += expected != {d for d, (a, dn) in acls.items() if a & token_only_p and not dn & token_only_p}
                    auth = {"authorization": f"Bearer {tokens[c]}"}
                    r = http.post("/v1/search", headers=auth, json={"query": "duelterm", "mode": "bm25", "top_k": 100,
                                                                    "group_by": "document"})
                    assert r.status_code == 200, r.text
                    got = {d["doc_id"] for d in r.json()["documents"]}
                    leaks += len(got - expected)
                    misses += len(expected - got)
                    count = http.get("/v1/chunks/count", headers=auth).json()["visible_chunks"]
                    leaks += max(0, count - len(expected))
                    misses += max(0, len(expected) - count)
                    checks += 2
                return leaks, misses, checks, widened

            leaks, misses, checks, widened = duel()
            assert (leaks, misses) == (0, 0)
            assert widened >= len(callers) // 3, widened  # the directory decided many callers' answers
            # SCIM changes: cut nested edges, deactivate and reactivate users; seen within the bound
            for g in rng.sample(groups[:18], 4):
                for m in sorted(members[g])[:1]:
                    members[g].discard(m)
                    _scim(http, "PATCH", f"/Groups/{ids[g]}", {"schemas": [PATCH_OP], "Operations": [
                        {"op": "remove", "path": f'members[value eq "{ids[m]}"]'}]})
            for u in users[1:5]:
                graph.active[u] = not graph.active[u]
                _scim(http, "PATCH", f"/Users/{ids['u:' + u]}", {"schemas": [PATCH_OP], "Operations": [
                    {"op": "replace", "path": "active", "value": graph.active[u]}]})
            time.sleep(settings.directory.version_check_s + 0.2)
            leaks2, misses2, checks2, _ = duel()
            assert (leaks2, misses2) == (0, 0)
            assert checks + checks2 == 4 * len(callers)
            # the duel is not vacuous: nesting and the depth cap decided some callers' answers
            chain = graph.principals(Caller(users[0], (), False), set(users), set(groups))
            assert "group:" + groups[18 + MAX_DEPTH - 1] in chain and "group:" + groups[18 + MAX_DEPTH] not in chain
    finally:
        services.close()
