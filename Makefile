# Two commands: `make up` runs the service, `make test` runs every check. Both set up a
# virtual environment in .venv first (pip install is a no-op when nothing changed).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: up test lint install install-test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

install-test: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'

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
