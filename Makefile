# Two commands: `make run` (set up, then train on MNIST) and `make test` (set up, lint, test).
# Python 3.11 or newer; `make PYTHON=python3.13 ...` picks another interpreter.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
# Optional: a local MNIST mirror (folder, file:// or http URL) for offline machines.
MIRROR ?=
MIRROR_FLAG := $(if $(MIRROR),--mirror $(MIRROR),)

.PHONY: setup setup-dev run stack test lint postgresql format bench-setup lock clean

# The runtime lock: what the product needs, with hashes (pip checks every download).
# The locks are complete, so pip installs exactly them (--no-deps) and `pip check` proves
# nothing is missing. Without --no-deps, the pip that Python 3.11's venv brings (23.2)
# refuses the hash-locked tree once a newer release of a package required with extras
# exists (httpx[http2] from prefect, since httpx 0.29.0).
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --no-deps -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/pip check
	touch $@

# Plus the dev lock (pytest, ruff, hypothesis), for `make test`; pinned to the same versions.
$(DEV_STAMP): $(STAMP) requirements-dev.lock
	$(BIN)/pip install --quiet --no-deps -r requirements-dev.lock
	$(BIN)/pip check
	touch $@

setup: $(STAMP)

setup-dev: $(DEV_STAMP)

run: setup
	$(BIN)/mnist-pipeline train $(MIRROR_FLAG)

# The local production stack: a Prefect server on 127.0.0.1:4200 serving both deployments.
# Ctrl-C or SIGTERM is how a stack is meant to end: its exit 130/143 is a normal end here.
stack: setup
	@$(BIN)/mnist-pipeline stack; code=$$?; case $$code in 0|130|143) exit 0;; *) exit $$code;; esac

lint: setup-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The stack-on-PostgreSQL tests start a PostgreSQL of their own (tests/postgres.py) with
# its server programs: where pg_ctl is missing (on PATH, or Debian's
# /usr/lib/postgresql/*/bin), install Debian's postgresql if we can (root and apt-get, as
# CI runs); otherwise those tests skip, saying why (and fail under CI=true).
PG_PACKAGES := postgresql postgresql-contrib

postgresql:
	@if command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then \
		:; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's $(PG_PACKAGES) for the PostgreSQL tests"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -q $(PG_PACKAGES) >/dev/null \
			|| { apt-get update -q >/dev/null && apt-get install -y -q $(PG_PACKAGES) >/dev/null; }; \
	else \
		echo "no pg_ctl, and no root with apt-get to install PostgreSQL: its tests will be skipped"; \
	fi

test: lint postgresql
	$(BIN)/pytest

format: setup-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Benchmark-only dependencies (scikit-learn, PyTorch CPU), never needed by the product.
bench-setup: setup
	$(BIN)/pip install --quiet -r requirements-bench.txt

# Regenerate both locks from pyproject.toml (README, "Locks"): universal (one lock for
# Python 3.11+ on Linux and macOS) and with hashes. Pins already in a lock are kept
# unless pyproject.toml moves them; `make lock UPGRADE=1` takes the newest of everything.
# Then every pin must have a wheel for each Python and platform below, or the lock is
# refused (a user there would need a compiler); lock-constraints.txt holds the way out.
UV_VERSION := 0.13.9
UV := $(VENV)/lock-tools/bin/uv
LOCK_FLAGS := --universal --generate-hashes --python-version 3.11 --custom-compile-command "make lock"
WHEEL_PYTHONS := 3.11 3.12 3.13
WHEEL_PLATFORMS := x86_64-manylinux_2_28 aarch64-manylinux_2_28 x86_64-apple-darwin aarch64-apple-darwin

$(UV):
	$(PYTHON) -m venv $(VENV)/lock-tools
	$(VENV)/lock-tools/bin/pip install --quiet uv==$(UV_VERSION)

lock: export UV_PYTHON_DOWNLOADS = never
lock: $(UV)
	$(UV) pip compile pyproject.toml -c lock-constraints.txt $(LOCK_FLAGS) \
		$(if $(UPGRADE),--upgrade) -o requirements.lock
	$(UV) pip compile --group pyproject.toml:dev -c requirements.lock $(LOCK_FLAGS) \
		$(if $(UPGRADE),--upgrade) -o requirements-dev.lock
	for py in $(WHEEL_PYTHONS); do for platform in $(WHEEL_PLATFORMS); do \
		echo "wheels for Python $$py on $$platform"; \
		$(UV) pip compile --quiet requirements.lock requirements-dev.lock --only-binary :all: \
			--python-version $$py --python-platform $$platform -o /dev/null || exit 1; \
	done; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
