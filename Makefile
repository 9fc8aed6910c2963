# Each README command is one line: `make demo` and `make test`. Both work on a fresh machine
# with Python 3.11 (the virtual environment is created on first use).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# `make demo` installs what the program needs to run; `make test` adds the development
# extras (pytest, Playwright, ...). Either works first, in any order, any number of times.
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
DEMO_NOW ?= 2023-09-11T10:00:00-04:00
DEMO_PORT ?= 8025
CONSOLE_PORT ?= 8080
export PSHNOTIFY_SMTP_PORT ?= $(DEMO_PORT)

.PHONY: setup demo console test test-fast lint typecheck check bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $(RUN_STAMP)

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(DEV_STAMP) $(RUN_STAMP)

setup: $(DEV_STAMP)

# The whole path on the embedded defaults, in a campaign folder var/demo/ that
# `pshnotify new` makes: SQLite, a local mail catcher writing .eml files, the seed program, a
# sample roster, the pilot wave launched and sent; then a console operator to sign in with.
demo: $(RUN_STAMP)
	@bash scripts/demo.sh "$(DEMO_NOW)" "$(DEMO_PORT)"

# The web console on the demo's campaign, its clock starting at the demo's instant.
console: $(RUN_STAMP)
	@test -f var/demo/var/pshnotify.db || { echo "no demo yet: run make demo first" >&2; exit 2; }
	cd var/demo && PSHNOTIFY_HTTP_PORT=$(CONSOLE_PORT) ../../$(BIN)/pshnotify web --now "$(DEMO_NOW)"

test: $(DEV_STAMP)
	@bash scripts/test-deps.sh
	$(BIN)/pytest -q -n 3 --dist worksteal --durations=15

# The tests marked fast: the policy, the calendar, the commands and the renderers, with no
# server of any kind (SQLite files at most; no PostgreSQL, relay, IMAP server or browser), in
# under a minute. CI and `make test` run everything.
test-fast: $(DEV_STAMP)
	$(BIN)/pytest -q -n 0 -m "fast and not postgres"

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

check: lint typecheck test

bench: $(DEV_STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
