# Two commands for a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DO_NOT_TRACK := 1
export UNSTRUCTURED_DISABLE_NOTICE := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MPLCONFIGDIR := $(CURDIR)/var/.cache/matplotlib
export XDG_CACHE_HOME := $(CURDIR)/var/.cache
export TOKENIZERS_PARALLELISM := false

.PHONY: install run serve demo-ingest lint test bench battery eval clean

install: $(STAMP)

# The pip steps live in scripts/install.sh, which the Dockerfile runs too (so they cannot drift).
$(STAMP): pyproject.toml vendor/en_core_web_sm/pyproject.toml scripts/install.sh
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	scripts/install.sh $(BIN)/pip -e '.[test]'
	@touch $(STAMP)

demo-ingest: install
	$(BIN)/clearance ingest demo --source demo

run: demo-ingest
	@echo
	@echo "Clearance is starting on http://127.0.0.1:8000 (embedded: Qdrant Edge + SQLite under ./var)."
	@echo "Mint a dev token and search, in another terminal:"
	@echo '  TOKEN=$$($(BIN)/clearance token --sub alice --group finance)'
	@echo '  curl -s http://127.0.0.1:8000/v1/search -H "Authorization: Bearer $$TOKEN" \'
	@echo '       -H "Content-Type: application/json" -d '"'"'{"query": "travel expenses", "top_k": 5}'"'"
	@echo "Demo users: alice (finance), bob (hr), carol (engineering), dave (legal, exec), erin (no groups)."
	@echo
	$(BIN)/clearance serve

serve: install
	$(BIN)/clearance serve

# Static checks run before the suite: the layer contract (import-linter), ruff, and mypy
# (strict on the security and storage layers, checked elsewhere).
lint: install
	PYTHONPATH=. $(BIN)/lint-imports --no-cache
	$(BIN)/ruff check .
	$(BIN)/mypy

test: install lint
	$(BIN)/python -m pytest -q -p no:cacheprovider

# Benchmarks are never part of `make test`; figures land in bench/results and BENCHMARKS.md.
BENCH_SIZES ?= 10000 100000 1000000
# Clearance beside PostgreSQL + pgvector (bench/peer.py; pgvector built from Debian's source on first use)
PEER_SIZE ?= 100000
bench: install
	for n in $(BENCH_SIZES); do $(BIN)/python -m bench.engine --chunks $$n || exit 1; done
	for n in $(BENCH_SIZES); do $(BIN)/python -m bench.idf --chunks $$n || exit 1; done
	$(BIN)/python -m bench.idf_quality
	for n in $(BENCH_SIZES); do $(BIN)/python -m bench.e2e --chunks $$n || exit 1; done
	$(BIN)/python -m bench.ingest --docs 1000
	@ls /usr/share/postgresql/*/extension/vector.control >/dev/null 2>&1 || bash bench/peers/build_pgvector.sh
	$(BIN)/python -m bench.peer --chunks $(PEER_SIZE) --queries 100 --recall-queries 300 --acorn 0.5 --ef 300 400 800
	$(BIN)/python -m bench.report

# Reliability and security battery (issue #9): each item exits non-zero on a violation; all run,
# then BATTERY.md is rendered from battery/results/*.json. Fast versions of each are in `make test`.
BATTERY_ITEMS ?= leak_duel state_machine tokens crash hostile fuzz load restart writes
battery: install
	@test -d var/bench/n100000/edge || $(BIN)/python -m bench.engine --chunks 100000 --build-only
	@fail=0; for m in $(BATTERY_ITEMS); do echo "== battery.$$m"; $(BIN)/python -m battery.$$m || fail=1; done; \
	$(BIN)/python -m battery.report || fail=1; exit $$fail

# Retrieval quality on every dataset beside the repo; baselines in eval/baselines.
DATASETS ?= scifact cisi cacm med npl lisa
eval: install
	for d in $(DATASETS); do $(BIN)/clearance eval run --dataset ../shared/datasets/$$d --out reports/eval || exit 1; done

clean:
	rm -rf var .pytest_cache
