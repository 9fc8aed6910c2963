# Each README command is one line: `make demo` and `make test`. Both work on a fresh machine
# with Python 3.11 (the virtual environment is created on first use).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_NOW ?= 2023-09-11T10:00:00-04:00
DEMO_PORT ?= 8025
export PSHNOTIFY_SMTP_PORT ?= $(DEMO_PORT)

.PHONY: setup demo test test-fast lint typecheck check bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# The whole path on the embedded defaults: SQLite under var/, a local mail catcher writing
# .eml files to var/mail/, the seed program, a sample roster, the pilot wave launched and sent.
demo: $(STAMP)
	@bash scripts/demo.sh "$(DEMO_NOW)" "$(DEMO_PORT)"

test: $(STAMP)
	@bash scripts/test-deps.sh
	$(BIN)/pytest -q -n 2

# The tests marked fast: the policy, the calendar, the commands and the renderers, with no
# server of any kind (SQLite files at most; no PostgreSQL, relay, IMAP server or browser), in
# under a minute. CI and `make test` run everything.
test-fast: $(STAMP)
	$(BIN)/pytest -q -n 0 -m "fast and not postgres"

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
