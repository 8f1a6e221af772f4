# Everything a fresh machine needs: `make up` runs the stack, `make test` runs the tests.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Label Studio in its own environment: it pins Django and much else (the round-trip test).
LS_VENV := .venv-label-studio
LS_STAMP := $(LS_VENV)/.installed

.PHONY: setup up test bench bench-loop soak lint format clean label-studio

setup: $(STAMP)

label-studio: $(LS_STAMP)

$(LS_STAMP):
	test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LS_VENV)/bin/python -m pip install --quiet 'label-studio>=1.23,<1.24'
	touch $(LS_STAMP)

# torch first, pinned to the CPU wheel: any other spec pulls gigabytes of CUDA packages.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

up: setup
	$(BIN)/emotion-ops up

# Benchmark of the champion (run `make up` first): tables in var/bench/latest.md.
bench: setup
	$(BIN)/emotion-ops bench

# The monitoring loop, measured: 2,000 GoEmotions comments with feedback, one monitor cycle,
# the champion before and after (run `make up` first; it promotes a retrained model).
bench-loop: setup
	$(BIN)/emotion-ops bench loop

# 10 minutes at 32 clients on PostgreSQL with the database stopped for 60 s mid-run (run
# `make up` first; it stops and starts this machine's PostgreSQL): var/soak/results.md.
soak: setup
	$(BIN)/emotion-ops soak

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The two environments install side by side (mostly waiting on downloads), then the tests run.
test:
	$(MAKE) -j2 lint label-studio
	$(BIN)/python -m pytest

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) $(LS_VENV) var .pytest_cache .ruff_cache .mypy_cache
