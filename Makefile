# Two commands do all the set-up on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8080
AXE_VERSION := 4.14.1

.PHONY: serve test test-unit fuzz lint format bench soak check-content lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The PostgreSQL driver is installed only when CDS_DATABASE_URL names PostgreSQL.
RUNTIME := $(VENV)/.runtime$(if $(findstring postgres,$(CDS_DATABASE_URL)),-postgres,)

$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.runtime-postgres: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[postgres]'
	@touch $@

$(VENV)/.test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[integration]'
	@command -v npm >/dev/null 2>&1 || { echo "make test: npm is needed for axe-core (apt-get install npm)"; exit 2; }
	npm install --silent --no-audit --no-fund --prefix $(VENV)/node axe-core@$(AXE_VERSION)
	@touch $@ $(VENV)/.runtime $(VENV)/.runtime-postgres

## Start the service under gunicorn (gthread) on http://127.0.0.1:$(PORT) with development defaults.
serve: $(RUNTIME)
	PORT=$(PORT) $(BIN)/cds-service serve

## Install test dependencies, lint, type-check, and run the whole test suite.
test: $(VENV)/.test
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

## Unit and HTTP tests only (installs `.[test]`: no FHIR server, no PostgreSQL driver).
test-unit: | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/python -m pytest -m "not integration"

## Every field of every fixture mutated to every JSON type (minutes; `make test` runs a sample).
fuzz: $(VENV)/.test
	FOOTDROP_FUZZ=full $(BIN)/python -m pytest -q tests/test_fuzz_fixtures.py

lint: $(VENV)/.test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.test
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## Regenerate requirements.lock (pinned, hashed runtime + postgres + redis + codes deps) from pyproject.toml.
lock: | $(BIN)/python
	$(BIN)/pip install --quiet 'uv>=0.9'
	$(BIN)/uv pip compile pyproject.toml --extra postgres --extra redis --extra codes --universal \
	  --python-version 3.11 --generate-hashes --custom-compile-command 'make lock' \
	  -o requirements.lock

check-content: $(RUNTIME)
	$(BIN)/cds-service check-content

## Issue 14's table (floor, auth off, auth on per replay store; 1/16/64 clients) into
## var/bench-results.md; nothing is installed; RECORD=1 also writes it into BENCHMARKS.md.
bench: $(VENV)/.test
	$(BIN)/python -m benchmarks $(if $(RECORD),--record,)

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache *.egg-info
