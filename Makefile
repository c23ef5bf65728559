# The README's two commands: `make demo` (the main job) and `make test` (the whole suite).
# Both build .venv from nothing but Python: torch's CPU wheel first (an unpinned torch pulls a
# multi-GB CUDA build), then the package with its dev extras.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint install

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/dlmsearch demo --out runs/quickstart

test: $(STAMP)
	$(BIN)/ruff check dlmsearch tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check dlmsearch tests bench
	$(BIN)/mypy
