# ai-chat-backend: `make dev` runs the whole system locally, `make test` runs every test.
# Both install what they need first (apt packages, venvs, npm tools) and reuse it on later runs.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install dev test test-unit test-integration test-e2e test-deno lint typecheck format bench clean lock lock-check types

# Exact versions with hashes from requirements/*.lock (see devstack/lock.py): nothing is resolved here.
$(VENV)/.installed: pyproject.toml requirements/bootstrap.lock requirements/dev.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r requirements/bootstrap.lock
	$(PY) -m pip install --quiet --require-hashes -r requirements/dev.lock
	$(PY) -m pip install -qq --no-deps --no-build-isolation -e .
	touch $@

# After editing pyproject.toml's dependencies or requirements/bootstrap.in; `make lock ARGS='--upgrade-package X'`
# moves one locked package to its newest release.
lock: $(VENV)/.installed
	$(PY) -m devstack.lock $(ARGS)

lock-check: $(VENV)/.installed
	$(PY) -m devstack.lock --check

# The web client's generated TypeScript types (examples/web/src/types), after a change to the API or a migration;
# `make test` fails while they are stale.
types: install
	$(PY) -m devstack.web types

.devstack/.installed: devstack/install.sh requirements/bootstrap.lock devstack/letta-server-0.16.8.lock devstack/pgserver.lock devstack/deno/package-lock.json $(wildcard supabase/functions/*/deno.lock) tests/e2e/ai_sdk/deno.lock examples/web/package-lock.json
	bash devstack/install.sh
	touch $@

install: $(VENV)/.installed .devstack/.installed

dev: install
	$(PY) -m devstack.stack up

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

test: install lock-check lint typecheck
	$(PY) -m pytest -q

test-unit: $(VENV)/.installed
	$(PY) -m pytest -q tests/unit

test-integration: install
	$(PY) -m pytest -q tests/integration

test-e2e: install
	$(PY) -m pytest -q tests/e2e

format: $(VENV)/.installed
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: install
	$(PY) -m bench.run_all

clean:
	rm -rf .devstack/run
