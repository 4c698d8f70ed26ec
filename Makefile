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

# The main job: train the paper's ICL transformer (paper-faithful prefix protocol, 8 sampled prefix lengths per
# step) on prototype tasks on CPU; per-position accuracy curve + PNG in runs/demo (about 4 minutes on 2 cores).
demo: setup
	rm -rf runs/demo
	$(BIN)/icl-meta train --task prototype --positions-per-step 8 --steps 2000 --out runs/demo

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
