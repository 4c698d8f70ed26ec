# Quick start (from a fresh clone):  make demo   |   make test
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint format bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The main job: train the paper's ICL transformer on prototype tasks on CPU; curve + PNG in runs/demo.
demo: setup
	rm -rf runs/demo
	$(BIN)/icl-meta train --task prototype --steps 4000 --out runs/demo

test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: setup
	$(BIN)/python experiments/throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
