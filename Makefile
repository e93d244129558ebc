# Flowy: the two commands of the README, and a few for developers.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: serve test check clean bench bench-smoke

## Install Flowy into .venv and start it in embedded mode on 127.0.0.1:8000.
serve: $(VENV)/.flowy
	$(BIN)/flowy serve

## Install Flowy with its test dependencies into .venv and run the whole test suite.
test: $(VENV)/.flowy-test
	$(BIN)/pytest

## Format check, lint and type check (scripts/check).
check: $(VENV)/.flowy-test
	scripts/check

## Benchmarks (bench/README.md): the full table, or a CI-sized smoke run (< 1 min).
bench: $(VENV)/.flowy-test
	$(BIN)/python -m bench

bench-smoke: $(VENV)/.flowy-test
	$(BIN)/python -m bench --smoke

$(VENV)/.flowy: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.flowy-test: pyproject.toml $(VENV)/.flowy
	$(BIN)/python -m pip install --quiet -e ".[test,dev]"
	touch $@

clean:
	rm -rf $(VENV) flowy-data .pytest_cache
