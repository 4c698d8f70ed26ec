# Quick start (from a fresh clone):  make demo   |   make test
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast lint format bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The main job: Figure 2 at cpu scale (experiments/fig2_single.py and fig2_mixture.py): the ICL transformer, MatchNet,
# ProtoNet, CNP and MAML trained on prototype, pairwise, amortization and mixture tasks on CPU. Results and PNGs go to
# runs/demo (compare with the committed figures/fig2_*_cpu.*); runs to runs/fig2/cpu (a second call reuses them).
demo: setup
	$(BIN)/icl-meta reproduce fig2 --scale cpu --figures runs/demo

# The README's test command (and CI's): lint, format and type checks, then both test tiers.
test: lint
	$(BIN)/pytest -m "slow or not slow"

# The edit-test loop: the default (fast) tier only.
test-fast: setup
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: setup
	$(BIN)/python experiments/throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
