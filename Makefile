# Two entry points: `make run` (service + demo) and `make test` (the whole suite).
# Both create the virtual environment and install what they need on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-setup templates-check journey-check simulation-baseline coverage lint typecheck clean lock

# Exactly the tested versions: every package pinned with its hashes in requirements.lock
# (`make lock` regenerates it), then the project itself without touching its dependencies.
# pip installs the locked uv first (hash-checked too); uv then installs the rest, several times
# faster than pip. uv does not read pip's configuration: set UV_INDEX_URL (or UV_DEFAULT_INDEX)
# where pip uses a private index.
PIP := $(BIN)/python -m pip --disable-pip-version-check
# Compiled once here (--compile-bytecode) and cached by Python from then on: with
# PYTHONDONTWRITEBYTECODE set, as on some CI images, every process (the tests start hundreds:
# CLI commands, workers, servers) would compile each module it imports again, doubling the
# CPU the suite needs.
unexport PYTHONDONTWRITEBYTECODE
$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (set PYTHON=...)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	awk '/^uv==/ {on = 1} on {print} on && !/\\$$/ {exit}' requirements.lock >$(VENV)/uv.lock.txt
	$(PIP) install --quiet --require-hashes --no-deps -r $(VENV)/uv.lock.txt
	$(BIN)/uv pip install --quiet --python $(BIN)/python --require-hashes --no-deps \
		--compile-bytecode -r requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps --no-build-isolation -e .
	@touch $@

# Upgrade every pinned package to the newest version pyproject.toml allows, then run
# `make test` before committing the new requirements.lock (everything, for development and
# tests) and requirements-prod.lock (the same versions, only what the image needs).
lock: $(STAMP)
	echo 'setuptools>=69' | $(BIN)/uv pip compile pyproject.toml - --extra dev --extra postgres \
		--upgrade --generate-hashes --universal --python-version 3.11 \
		--custom-compile-command 'make lock' --quiet -o requirements.lock
	echo 'setuptools>=69' | $(BIN)/uv pip compile pyproject.toml - --extra postgres \
		-c requirements.lock --generate-hashes --universal --python-version 3.11 \
		--custom-compile-command 'make lock' --quiet -o requirements-prod.lock

# Prism (contract mocks of SendGrid and Twilio) for the provider tests. Without npm the
# tests that need it skip, so a machine without Node.js can still run the suite.
node_modules/.installed: package.json package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --no-audit --no-fund --loglevel=error >/dev/null && touch $@; \
	else \
		echo "warning: npm not found: the contract-mock (Prism) tests will be skipped;" \
			"install Node.js >= 18.20 with npm to run them" >&2; \
	fi

# Debian's Chromium for the template preview's browser test (Playwright drives it; nothing is
# downloaded by Playwright). Installed with apt when missing and we may; else the test skips.
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's chromium for the browser test"; \
		(apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core >/dev/null \
		|| (apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends \
			chromium fonts-dejavu-core >/dev/null)) \
		|| echo "warning: could not install chromium: the preview's browser test will be skipped" >&2; \
	else \
		echo "warning: $(CHROMIUM) is missing (apt-get install chromium as root): the preview's" \
			"browser test will be skipped" >&2; \
	fi

run: $(STAMP)
	$(BIN)/trialpath up

# The tests run in TEST_PROCESSES processes (pytest-xdist). Any test may run beside any other:
# each has its own time-skipping server, task queue, database and folders, and binds free ports
# only. Four on a 2-core machine: much of the suite waits on servers and journey clocks (two
# processes keep the cores about 60 % busy); `make test TEST_PROCESSES=8` on a bigger one.
# Each process takes the next test when it is free, the longest first (tests/conftest.py).
TEST_PROCESSES ?= 4
PYTEST := $(BIN)/pytest -n $(TEST_PROCESSES) --dist load --maxschedchunk 1
# The five slow tests spend most of their time waiting on journey clocks (the cores stay about
# 75 % busy with all five side by side): a process each.
SLOW_PROCESSES ?= 3

# The suite runs beside a throwaway PostgreSQL (production's database): every test that uses a
# database runs on SQLite and on PostgreSQL, in the same run (the script installs Debian's
# postgresql if missing; without it, SQLite only, with a warning; CI=true fails instead). Then
# the slow suite (`slow`: the real dev server and the whole service, the chaos and fault
# proofs), on its own: beside the rest it would starve the timed tests of both.
test:
	@$(MAKE) --no-print-directory --jobs=3 --output-sync=target test-setup
	bash scripts/with-postgres.sh --or-sqlite $(PYTEST) -m 'not slow'
	$(PYTEST) -n $(SLOW_PROCESSES) -m slow -p no:cacheprovider

# What the tests need, and the checks that come first, side by side: the Python and the npm
# packages download together, then ruff, mypy and the template check run together.
test-setup: $(STAMP) node_modules/.installed $(CHROMIUM) lint typecheck templates-check \
	journey-check

templates-check: $(STAMP)
	$(BIN)/trialpath templates check

# The journey and templates played by a synthetic population on time-skipping servers
# (docs/simulate.md), checked: every drip step reached, the daily cap kept, messages per user
# not doubled against the last accepted report. A change meant to alter the journey
# regenerates that report: `make simulation-baseline`, then commit it.
SIMULATION := --population 80 --seed 7
journey-check: $(STAMP)
	$(BIN)/trialpath simulate $(SIMULATION) --against tests/simulation/baseline.json --check \
		--format json --out $(VENV)/simulation.json

simulation-baseline: $(STAMP)
	$(BIN)/trialpath simulate $(SIMULATION) --format json --out tests/simulation/baseline.json

# The same tests with a line coverage report (about a third more CPU, so not in `make test`).
coverage: $(STAMP) node_modules/.installed $(CHROMIUM)
	$(PYTEST) --cov=trialpath --cov=workflows --cov=activities --cov-report=term:skip-covered

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache .coverage
