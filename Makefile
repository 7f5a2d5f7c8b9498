# The two commands a newcomer needs: `make serve` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_RUN := $(VENV)/.install-stamp-run
STAMP_DEV := $(VENV)/.install-stamp-dev
PYTEST_ARGS ?=

.PHONY: serve test lint format clean install browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP_RUN): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(STAMP_DEV): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(STAMP_RUN)

install: $(STAMP_RUN)

serve: $(STAMP_RUN)
	$(BIN)/pocketcode serve

# Debian's Chromium for the browser tests (installed with apt-get when missing).
browser:
	scripts/ensure-chromium

test: $(STAMP_DEV) browser
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

lint: $(STAMP_DEV)
	$(BIN)/ruff format --check src tests
	$(BIN)/ruff check src tests
	$(BIN)/mypy

format: $(STAMP_DEV)
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
