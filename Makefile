# Two commands: `make run` (set up, then train on MNIST) and `make test` (set up, lint, test).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Optional: a local MNIST mirror (folder, file:// or http URL) for offline machines.
MIRROR ?=
MIRROR_FLAG := $(if $(MIRROR),--mirror $(MIRROR),)

.PHONY: setup run stack test lint format bench-setup clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

setup: $(STAMP)

run: setup
	$(BIN)/mnist-pipeline train $(MIRROR_FLAG)

# The local production stack: a Prefect server on 127.0.0.1:4200 serving both deployments.
stack: setup
	$(BIN)/mnist-pipeline stack

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/pytest

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Benchmark-only dependencies (scikit-learn, PyTorch CPU), never needed by the product.
bench-setup: setup
	$(BIN)/pip install --quiet -r requirements-bench.txt

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
