# The two commands of the README:
#   make serve   install evflow in .venv and run the example deployment (flows/, sensors/)
#   make test    install evflow with its test tools (and headless Chromium) and run every test

VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: serve install install-test browser test lint bench clean

serve: install
	$(BIN)/evflow serve

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $@

install-test: $(VENV)/.installed-test

$(VENV)/.installed-test: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed

browser:
	scripts/install-browser

# The whole suite on SQLite, then the engine, rules, sensor and service suites again with
# every engine on PostgreSQL (EVFLOW_TEST_STORE; see tests/postgres.py for the server used).
test: install-test browser
	$(BIN)/python -m pytest
	EVFLOW_TEST_STORE=postgres $(BIN)/python -m pytest tests/unit tests/integration tests/contract

lint: install-test
	$(BIN)/ruff check evflow tests benchmarks flows sensors
	$(BIN)/ruff format --check evflow
	$(BIN)/mypy

bench: install-test browser
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
