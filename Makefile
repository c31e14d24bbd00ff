# Provision — the two commands are `make demo` and `make test`; the rest are helpers.
#
# Everything runs inside .venv, created from the system's python3 (3.11 or newer) on first use.
# The stamp file makes re-runs instant until pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_PORT ?= 8000
# Extra pytest arguments, e.g. `make test PYTEST_ARGS="-k celery -x"`.
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv demo test lint format bench clean

help:
	@echo "make demo   run the app with demo data at http://127.0.0.1:$(DEMO_PORT)/ (Ctrl-C stops)"
	@echo "make test   run the whole test suite (unit, integration, end-to-end)"
	@echo "make lint   ruff check and ruff format --check"
	@echo "make format ruff format and ruff check --fix"
	@echo "make bench  run the benchmarks and print their figures"
	@echo "make clean  remove the virtualenv, var/ (demo database, broker queue) and caches"

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || \
		{ echo "Provision needs Python 3.11 or newer; $(PYTHON) is $$($(PYTHON) -V 2>&1)." >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	@touch $(STAMP)

demo: $(STAMP)
	@$(BIN)/python scripts/demo.py --port $(DEMO_PORT)

# The tests get a var/ of their own: the SQLite test database and, above all, the filesystem
# broker's queue, so a `make demo` running alongside cannot take the tests' Celery messages.
test: export PROVISION_VAR_DIR ?= $(CURDIR)/var/test
test: $(STAMP)
	@$(BIN)/pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; \
	exit $$status

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: export PROVISION_VAR_DIR ?= $(CURDIR)/var/test
bench: $(STAMP)
	$(BIN)/pytest -m benchmark -s $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) var staticfiles .pytest_cache .ruff_cache *.egg-info test-artifacts
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
