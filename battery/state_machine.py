"""Ingestion state machine (issue #9): grant, revoke, content edits, deletes, ACL-only changes
and group membership changes through the real server, every read path checked after every step.

``python -m battery.state_machine [--steps 1000 --steps-per-example 50 --seed N --driver both]``

A ``RuleBasedStateMachine`` drives the push API of one live server (``DuelEnv``: Qdrant Edge,
SQLite, hash embedder, dev-issuer tokens; ``battery.duel_corpus``). Two drivers share its rules
(``--driver both``: half the steps each): hypothesis, whose stateful runs use swarm testing
(each example enables a random subset of the rules, so some examples hammer two or three
rules), and a seeded random walk drawing every enabled rule uniformly. Hypothesis caps steps
per example, so both run examples of ``--steps-per-example`` steps on the same server (each
example's teardown deletes its documents and checks the index is empty) until ``--steps``
steps ran; the steps actually executed are counted and reported. Rules:

- ``start`` (every example's first step): a few documents;
- ``put``: a new document or a content edit (1–3 paragraphs, so the chunk count grows and
  shrinks), with an ACL and a modification time (some older than the ``archive`` source's
  maximum age or the ``max_age`` probe);
- ``put_same_content``: the same content with another ACL: ``acl_updated`` (or ``unchanged``),
  and the embedder must not run (``clearance_embed_texts_total{kind="document"}`` in ``/metrics``);
- ``patch_acl`` / ``grant`` / ``revoke``: ``PATCH …/acl`` (revoke removes from allow or adds to
  deny), also never embedding; a PATCH or DELETE of an absent document must be a 404;
- ``delete``: ``DELETE``;
- ``membership``: a caller joins or leaves a group (a new token: the IdP-side grant/revoke);
- ``foreign_put`` / ``foreign_delete``: the ``globex`` tenant's documents under the same
  sources and ids, through a second ``Ingestor``.

After every step, for every caller (four ``acme`` users and a ``globex`` user who shares a
subject and a group with one of them): the count; bm25, dense and hybrid search (with
``explain``) with ``top_k`` above the corpus, each of which must return exactly the visible
chunks; dense with ``max_age``; the document read of the document the step touched and of two
random ids (chunks in order, or the plain 404); and the ``acme`` admin's document list. The
index must hold exactly the model's chunks (no orphans). Leaks and misses are counted, not
raised, so the run reports every one of them with the steps that led to it.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase
from hypothesis import seed as hseed
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test

from battery.duel_corpus import ADMIN, ARCHIVE, COMMON, DAY, FOREIGN, TENANT, Doc, Duel, DuelEnv, Principal, utcnow
from battery.leak_duel import _text
from battery.result import exit_code, write_result

SOURCES = ("live", ARCHIVE)
DOC_IDS = tuple(f"s{i}" for i in range(6))
USERS = ("ann", "ben", "cat", "dan")
GROUPS = ("red", "blue", "green")
POOL = tuple(f"user:{u}" for u in USERS) + tuple(f"group:{g}" for g in GROUPS) + (f"tenant:{TENANT}", f"tenant:{FOREIGN}",
                                                                              "role:auditor")
AGES_DAYS = (1, 100, 250, 500, 900)  # away from the 180-day probe and the 365-day archive cutoff
MAX_AGE_S = 180 * DAY
INITIAL_CALLERS = (
    Principal("ann", TENANT, ("red",), kind="acme"),
    Principal("ben", TENANT, ("blue",), kind="acme"),
    Principal("cat", TENANT, (), ("auditor",), kind="acme"),
    Principal("dan", TENANT, ("red", "blue"), kind="acme"),
    Principal("ann", FOREIGN, ("red",), kind="globex"),  # same subject and group as acme's ann
)
ADMIN_CALLER = Principal("ops", TENANT, (), scopes=(ADMIN,), kind="admin")

ref_st = st.tuples(st.sampled_from(SOURCES), st.sampled_from(DOC_IDS))
acl_st = st.tuples(st.frozensets(st.sampled_from(POOL), max_size=3), st.frozensets(st.sampled_from(POOL), max_size=2))
text_st = st.tuples(st.integers(1, 3), st.integers(0, 2**20))  # paragraphs, text seed
age_st = st.sampled_from(AGES_DAYS)
pick_st = st.integers(0, 2**16)  # an index into the current documents (modulo their number)


@dataclass
class Run:
    """What every example of one run shares: the server, the counters, the step count."""

    env: DuelEnv
    duel: Duel
    now: datetime = field(default_factory=utcnow)
    steps: int = 0
    examples: int = 0
    rules: dict[str, int] = field(default_factory=dict)
    traces_reported: int = 0


def make_text(paragraphs: int, text_seed: int, doc_id: str) -> str:
    return _text(random.Random(text_seed), f"uq{doc_id}", paragraphs)


class LeakMachine(RuleBasedStateMachine):
    run: Run  # set on the subclass made for each run

    def __init__(self) -> None:
        super().__init__()
        self.run.examples += 1
        self.example = self.run.examples
        self.docs: dict[tuple[str, str, str], Doc] = {}  # (tenant, source, doc id) -> model
        self.callers = list(INITIAL_CALLERS)
        self.touched: tuple[str, str] | None = None
        self.trace: list[str] = []
        self.n_steps = 0
        self.rng = random.Random(self.example)
        self.violations_before = len(self.run.duel.violations)

    # -- helpers --------------------------------------------------------------------------------
    @property
    def env(self) -> DuelEnv:
        return self.run.env

    @property
    def duel(self) -> Duel:
        return self.run.duel

    def _step(self, name: str, detail: str) -> None:
        self.run.steps += 1
        self.n_steps += 1
        self.run.rules[name] = self.run.rules.get(name, 0) + 1
        self.trace.append(f"{name} {detail}")
        self.duel.context = f"[example {self.example} step {self.n_steps}] "

    def _write_error(self, msg: str) -> None:
        self.duel._bad("writes", "errors", 1, msg)

    def _embedded(self) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        r = self.env.http.get("/metrics")
        for fam in text_string_to_metric_families(r.text):
            for s in fam.samples:
                if s.name == "clearance_embed_texts_total" and s.labels.get("kind") == "document":
                    return float(s.value)
        return 0.0

    def _doc(self, tenant: str, ref: tuple[str, str], text: str, acl: tuple[frozenset, frozenset],
             modified: datetime) -> Doc:
        source, doc_id = ref
        return Doc(tenant, source, doc_id, acl[0], acl[1], modified, f"{COMMON.capitalize()} {doc_id}", text)

    def _acme_refs(self) -> list[tuple[str, str]]:
        return sorted((s, d) for t, s, d in self.docs if t == TENANT)

    def _patch(self, name: str, ref: tuple[str, str], allow: frozenset, deny: frozenset) -> None:
        self._step(name, f"{ref} allow={sorted(allow)} deny={sorted(deny)}")
        self.touched = ref
        doc = self.docs.get((TENANT, *ref))
        target = doc or self._doc(TENANT, ref, "", (allow, deny), self.run.now)
        before = self._embedded()
        r = self.env.patch_acl(target, allow, deny)
        self.duel.stats["writes"].requests += 1
        if doc is None:
            if r.status_code != 404:
                self._write_error(f"PATCH of absent {ref}: {r.status_code}")
            return
        if r.status_code != 200:
            self._write_error(f"PATCH {ref}: {r.status_code} {r.text[:200]}")
            return
        doc.allow, doc.deny = allow, deny
        if self._embedded() != before:
            self._write_error(f"PATCH {ref} embedded texts (an ACL-only change must not)")

    # -- rules ----------------------------------------------------------------------------------
    @initialize(first=st.lists(st.tuples(ref_st, text_st, acl_st, age_st), min_size=2, max_size=6))
    def start(self, first: list[tuple[tuple[str, str], tuple[int, int], tuple[frozenset, frozenset], int]]) -> None:
        """Every example starts from a few documents (one step, checked like any other)."""
        self._step("start", f"{len(first)} documents")
        for ref, text, acl, age in first:
            self._put(ref, text, acl, age)
            self.trace.append(f"  put {ref} paragraphs={text[0]} allow={sorted(acl[0])} deny={sorted(acl[1])} age={age}d")

    @rule(ref=ref_st, text=text_st, acl=acl_st, age=age_st)
    def put(self, ref: tuple[str, str], text: tuple[int, int], acl: tuple[frozenset, frozenset], age: int) -> None:
        """A new document, or a content edit of an existing one."""
        self._step("put", f"{ref} paragraphs={text[0]} allow={sorted(acl[0])} deny={sorted(acl[1])} age={age}d")
        self._put(ref, text, acl, age)

    def _put(self, ref: tuple[str, str], text: tuple[int, int], acl: tuple[frozenset, frozenset], age: int) -> None:
        key = (TENANT, *ref)
        old = self.docs.get(key)
        body = make_text(text[0], text[1], ref[1])
        same = old is not None and old.text == body
        modified = old.modified if same else self.run.now - timedelta(days=age)  # see put_same_content
        self.touched = ref
        doc = self._doc(TENANT, ref, body, acl, modified)
        r = self.env.put(doc)
        self.duel.stats["writes"].requests += 1
        if r.status_code != 200:
            self._write_error(f"PUT {ref}: {r.status_code} {r.text[:200]}")
            return
        out = r.json()
        want = ("added",) if old is None else ("unchanged", "acl_updated") if same else ("updated",)
        if out["outcome"] not in want:
            self._write_error(f"PUT {ref}: outcome {out['outcome']}, expected {want}")
        doc.chunks = old.chunks if same and old is not None else int(out["chunks"])
        self.docs[key] = doc

    @precondition(lambda self: bool(self._acme_refs()))
    @rule(pick=pick_st, acl=acl_st)
    def put_same_content(self, pick: int, acl: tuple[frozenset, frozenset]) -> None:
        """An ACL-only change through PUT: same content, another ACL; nothing may be embedded."""
        refs = self._acme_refs()
        ref = refs[pick % len(refs)]
        old = self.docs[(TENANT, *ref)]
        self._step("put_same_content", f"{ref} allow={sorted(acl[0])} deny={sorted(acl[1])}")
        self.touched = ref
        doc = self._doc(TENANT, ref, old.text, acl, old.modified)
        doc.chunks = old.chunks
        before = self._embedded()
        r = self.env.put(doc)
        self.duel.stats["writes"].requests += 1
        if r.status_code != 200:
            self._write_error(f"PUT {ref}: {r.status_code} {r.text[:200]}")
            return
        want = "unchanged" if (old.allow, old.deny) == acl else "acl_updated"
        if r.json()["outcome"] != want:
            self._write_error(f"PUT same content {ref}: outcome {r.json()['outcome']}, expected {want}")
        if self._embedded() != before:
            self._write_error(f"PUT same content {ref} embedded texts (an ACL-only change must not)")
        self.docs[(TENANT, *ref)] = doc

    @rule(ref=ref_st, acl=acl_st)
    def patch_acl(self, ref: tuple[str, str], acl: tuple[frozenset, frozenset]) -> None:
        self._patch("patch_acl", ref, acl[0], acl[1])

    @precondition(lambda self: bool(self._acme_refs()))
    @rule(pick=pick_st, who=st.sampled_from(POOL))
    def grant(self, pick: int, who: str) -> None:
        refs = self._acme_refs()
        ref = refs[pick % len(refs)]
        doc = self.docs[(TENANT, *ref)]
        self._patch("grant", ref, doc.allow | {who}, doc.deny)

    @precondition(lambda self: bool(self._acme_refs()))
    @rule(pick=pick_st, who=pick_st, by_deny=st.booleans())
    def revoke(self, pick: int, who: int, by_deny: bool) -> None:
        """Take a principal out of the allow list, or deny it."""
        refs = self._acme_refs()
        ref = refs[pick % len(refs)]
        doc = self.docs[(TENANT, *ref)]
        if by_deny:
            self._patch("revoke", ref, doc.allow, doc.deny | {POOL[who % len(POOL)]})
        else:
            allow = sorted(doc.allow)
            self._patch("revoke", ref, doc.allow - ({allow[who % len(allow)]} if allow else set()), doc.deny)

    @rule(ref=ref_st)
    def delete(self, ref: tuple[str, str]) -> None:
        self._step("delete", str(ref))
        self.touched = ref
        r = self.env.delete(*ref)
        self.duel.stats["writes"].requests += 1
        existed = self.docs.pop((TENANT, *ref), None) is not None
        if r.status_code != (204 if existed else 404):
            self._write_error(f"DELETE {ref} ({'present' if existed else 'absent'}): {r.status_code}")

    @rule(n=st.integers(0, len(INITIAL_CALLERS) - 1), grp=st.sampled_from(GROUPS), join=st.booleans())
    def membership(self, n: int, grp: str, join: bool) -> None:
        """The IdP grants or revokes a group: the caller's next token says so."""
        p = self.callers[n]
        groups = set(p.groups) | {grp} if join else set(p.groups) - {grp}
        self._step("membership", f"{p.tenant}/{p.sub} {'joins' if join else 'leaves'} {grp}")
        self.callers[n] = Principal(p.sub, p.tenant, tuple(sorted(groups)), p.roles, p.scopes, p.kind)
        self.duel.whoami(self.callers[n])

    @rule(ref=ref_st, text=text_st, acl=acl_st, age=age_st)
    def foreign_put(self, ref: tuple[str, str], text: tuple[int, int], acl: tuple[frozenset, frozenset], age: int) -> None:
        """The other tenant's document under the same source and id (a second Ingestor)."""
        self._step("foreign_put", f"{ref} allow={sorted(acl[0])} deny={sorted(acl[1])} age={age}d")
        self.touched = ref
        key = (FOREIGN, *ref)
        old = self.docs.get(key)
        body = make_text(text[0], text[1], ref[1])
        same = old is not None and old.text == body
        doc = self._doc(FOREIGN, ref, body, acl, old.modified if same and old else self.run.now - timedelta(days=age))
        res = self.env.foreign_apply([doc])[0]
        self.duel.stats["writes"].requests += 1
        if isinstance(res, Exception):
            self._write_error(f"foreign put {ref}: {res}")
            return
        doc.chunks = old.chunks if same and old is not None else res[1]
        self.docs[key] = doc

    @precondition(lambda self: any(t == FOREIGN for t, _, _ in self.docs))
    @rule(pick=pick_st)
    def foreign_delete(self, pick: int) -> None:
        refs = sorted((s, d) for t, s, d in self.docs if t == FOREIGN)
        ref = refs[pick % len(refs)]
        self._step("foreign_delete", str(ref))
        self.touched = ref
        self.duel.stats["writes"].requests += 1
        if not self.env.foreign.delete(*ref):
            self._write_error(f"foreign delete {ref}: not found")
        del self.docs[(FOREIGN, *ref)]

    # -- the check after every step ---------------------------------------------------------------
    @invariant()
    def every_read_path_matches_the_oracle(self) -> None:
        if not self.trace:
            return
        now = utcnow()
        docs = list(self.docs.values())
        n_index = self.env.services.index.size()
        st_index = self.duel.stats["index"]
        st_index.requests += 1
        st_index.items += n_index
        if n_index != sum(d.chunks for d in docs):
            self.duel._bad("index", "errors", 1,
                           f"{n_index} points in the index, the model has {sum(d.chunks for d in docs)}")
        refs = [self.touched] if self.touched else []
        refs += [(self.rng.choice(SOURCES), self.rng.choice(DOC_IDS)) for _ in range(2)]
        for p in self.callers:
            mine = {cid: d for d in docs if d.visible_to(p, now) for cid in d.chunk_ids()}
            fresh = {cid: d for cid, d in mine.items() if d.visible_to(p, now, max_age_s=MAX_AGE_S)}
            self.duel.count(p, len(mine))
            self.duel.search(p, mode="bm25", query=COMMON, allowed=mine, must=set(mine))
            self.duel.search(p, mode="dense", query=f"{COMMON} alpha", allowed=mine, must=set(mine))
            self.duel.search(p, mode="hybrid", query=COMMON, allowed=mine, must=set(mine), explain=True)
            self.duel.search(p, mode="dense", query=COMMON, allowed=fresh, must=set(fresh), extra={"max_age": MAX_AGE_S})
            for ref in refs:
                d = self.docs.get((p.tenant, *ref))
                self.duel.document(p, ref[0], ref[1], d if d is not None and d.visible_to(p, now) else None)
        self.duel.admin_list(ADMIN_CALLER, {d.key for d in docs if d.tenant == TENANT},
                             {d.key for d in docs if d.tenant != TENANT})
        self._report_trace()

    def _report_trace(self) -> None:
        """Once per example with a violation (at most 5 per run): the steps that led to it."""
        if len(self.duel.violations) > self.violations_before and self.run.traces_reported < 5 \
                and not getattr(self, "_traced", False):
            self._traced = True
            self.run.traces_reported += 1
            self.duel.violations.append(f"[example {self.example}] steps: " + " | ".join(self.trace[-30:]))

    def teardown(self) -> None:
        """Leave the shared server empty for the next example (and check that it is)."""
        for (tenant, source, doc_id) in list(self.docs):
            if tenant == TENANT:
                self.env.delete(source, doc_id)
            else:
                self.env.foreign.delete(source, doc_id)
        self.docs.clear()
        left = self.env.services.index.size()
        if left:
            self.duel._bad("index", "errors", 1, f"{left} points left after deleting every document")
        self.duel.context = ""


# -- drivers ----------------------------------------------------------------------------------


def _walk_acl(rng: random.Random) -> tuple[frozenset, frozenset]:
    return frozenset(rng.sample(POOL, rng.randint(0, 3))), frozenset(rng.sample(POOL, rng.choice((0, 0, 0, 1, 2))))


def _walk_put_args(rng: random.Random) -> tuple[tuple[str, str], tuple[int, int], tuple[frozenset, frozenset], int]:
    return ((rng.choice(SOURCES), rng.choice(DOC_IDS)), (rng.randint(1, 3), rng.randrange(2**20)), _walk_acl(rng),
            rng.choice(AGES_DAYS))


def _pick(rng: random.Random) -> int:
    return rng.randrange(2**16)


# rule -> (precondition, call with random arguments): the same rules, drawn uniformly
WALK = {
    "put": (lambda m: True, lambda m, r: m.put(*_walk_put_args(r))),
    "put_same_content": (lambda m: bool(m._acme_refs()), lambda m, r: m.put_same_content(_pick(r), _walk_acl(r))),
    "patch_acl": (lambda m: True, lambda m, r: m.patch_acl((r.choice(SOURCES), r.choice(DOC_IDS)), _walk_acl(r))),
    "grant": (lambda m: bool(m._acme_refs()), lambda m, r: m.grant(_pick(r), r.choice(POOL))),
    "revoke": (lambda m: bool(m._acme_refs()), lambda m, r: m.revoke(_pick(r), _pick(r), r.random() < 0.5)),
    "delete": (lambda m: True, lambda m, r: m.delete((r.choice(SOURCES), r.choice(DOC_IDS)))),
    "membership": (lambda m: True, lambda m, r: m.membership(r.randrange(len(INITIAL_CALLERS)), r.choice(GROUPS),
                                                             r.random() < 0.5)),
    "foreign_put": (lambda m: True, lambda m, r: m.foreign_put(*_walk_put_args(r))),
    "foreign_delete": (lambda m: any(t == FOREIGN for t, _, _ in m.docs), lambda m, r: m.foreign_delete(_pick(r))),
}


def walk(machine: type[LeakMachine], state: Run, steps: int, per_example: int, rng: random.Random) -> None:
    """A seeded random walk over the same rules, each drawn uniformly among those enabled,
    the same check after every step."""
    target = state.steps + steps
    while state.steps < target:
        m = machine()
        n = min(per_example, target - state.steps)
        try:
            m.start([_walk_put_args(rng) for _ in range(rng.randint(2, 6))])
            m.every_read_path_matches_the_oracle()
            for _ in range(n - 1):
                name = rng.choice([k for k, (pre, _) in WALK.items() if pre(m)])
                WALK[name][1](m, rng)
                m.every_read_path_matches_the_oracle()
        finally:
            m.teardown()


def hypothesis_run(machine: type[LeakMachine], state: Run, steps: int, per_example: int, seed: int) -> None:
    """Hypothesis examples (swarm testing: each example enables a random subset of the rules)
    until ``steps`` steps ran; generate phase only, since violations are counted, not raised."""
    target = state.steps + steps
    attempt = 0
    while state.steps < target:
        per = min(per_example, target - state.steps)
        cfg = hsettings(max_examples=max(1, math.ceil((target - state.steps) / per)), stateful_step_count=per,
                        deadline=None, database=None, phases=[Phase.generate],
                        suppress_health_check=list(HealthCheck), print_blob=False)
        before = state.steps
        run_state_machine_as_test(hseed(seed + attempt)(lambda: machine()), settings=cfg)
        attempt += 1
        if state.steps == before:  # hypothesis ran nothing: do not spin
            break


def run(steps: int = 1000, steps_per_example: int = 50, seed: int | None = None, driver: str = "both",
        data_dir: Path | None = None) -> tuple[bool, dict[str, Any], list[str]]:
    """``driver``: ``hypothesis``, ``walk``, or ``both`` (half the steps each)."""
    started = time.perf_counter()
    seed = random.randrange(2**32) if seed is None else seed
    tmp = Path(tempfile.mkdtemp(prefix="state-machine-")) if data_dir is None else data_dir
    env = DuelEnv(tmp / "var")
    state = Run(env, Duel(env))
    machine = type("LeakMachineRun", (LeakMachine,), {"run": state})
    hyp_steps = {"hypothesis": steps, "walk": 0}.get(driver, steps // 2)
    by_driver: dict[str, int] = {}
    crashed: list[str] = []
    try:
        for name, n in (("hypothesis", hyp_steps), ("walk", steps - hyp_steps)):
            if n <= 0:
                continue
            before = state.steps
            try:
                if name == "hypothesis":
                    hypothesis_run(machine, state, n, steps_per_example, seed)
                else:
                    walk(machine, state, n, steps_per_example, random.Random(seed))
            except Exception as exc:  # a crash of the machine or the server: reported, not hidden
                crashed.append(f"{name}: {type(exc).__name__}: {str(exc)[:500]}")
            by_driver[name] = state.steps - before
    finally:
        env.close()
        if data_dir is None:
            shutil.rmtree(tmp, ignore_errors=True)
    duel = state.duel
    totals = duel.totals()
    figures = {
        "steps": state.steps, "steps_by_driver": by_driver, "examples": state.examples, "checks": totals["requests"],
        "items_compared": totals["items"], "leaks": totals["leaks"], "misses": totals["misses"],
        "errors": totals["errors"], "crashes": len(crashed), "rules": dict(sorted(state.rules.items())),
        "per_path": duel.per_path(), "seed": seed, "seconds": round(time.perf_counter() - started, 1),
        "notes": "hypothesis RuleBasedStateMachine (generate phase, swarm testing) and a seeded uniform random "
                 "walk over the same rules; every read path checked for 5 callers after every step; top_k 100 "
                 "exceeds the model corpus (at most 48 chunks per tenant), so every search must return exactly "
                 "the visible chunks",
    }
    passed = totals["leaks"] == 0 and totals["misses"] == 0 and totals["errors"] == 0 and not crashed \
        and state.steps >= steps
    return passed, figures, [f"crash: {c}" for c in crashed] + duel.violations


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m battery.state_machine", description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--steps-per-example", type=int, default=50)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--driver", choices=("both", "hypothesis", "walk"), default="both")
    args = ap.parse_args(argv)
    for k, v in (("DO_NOT_TRACK", "1"), ("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1")):
        os.environ.setdefault(k, v)
    started = time.time()
    passed, figures, violations = run(args.steps, args.steps_per_example, args.seed, args.driver)
    cmd = f"python -m battery.state_machine --steps {args.steps} --seed {figures['seed']} --driver {args.driver}"
    out = write_result("state_machine", passed=passed, figures=figures, command=cmd, violations=violations,
                       started=started)
    print(f"state_machine: {'PASS' if passed else 'FAIL'}: {figures['steps']} steps {figures['steps_by_driver']} "
          f"in {figures['examples']} examples, "
          f"{figures['checks']} checks, {figures['leaks']} leaks, {figures['misses']} misses, {figures['errors']} errors "
          f"({figures['seconds']} s) -> {out}")
    for v in violations[:20]:
        print("  " + v)
    return exit_code(passed)


if __name__ == "__main__":
    sys.exit(main())
