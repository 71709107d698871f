# `make test` is the one command CI runs: it makes .venv, installs the project with its dev tools,
# then lints and runs the whole test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint bench calibrate clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

test: lint
	$(BIN)/pytest

calibrate: $(STAMP)
	$(BIN)/python bench/calibrate.py

bench: $(STAMP)
	$(BIN)/python bench/detect.py
	$(BIN)/python bench/pair_scale.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
