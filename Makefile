# The two commands of the README: `make run` (whole pipeline on the default data) and
# `make test` (lint + tests). Both create the virtual environment on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

export SSL_LAKE ?= $(CURDIR)/lake
export DAGSTER_HOME ?= $(CURDIR)/dagster_home
export SSL_PROFILE ?= demo

.PHONY: setup run test test-fast ui summary clean-lake

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	# lightly is the reference our SSL objectives are tested against. Its own dependencies
	# (pytorch-lightning, hydra) would downgrade antlr4 below what dagster needs, and the parts
	# the tests import (lightly.loss, lightly.models) need none of them: install it bare.
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps 'lightly==1.6.0'
	touch $@

setup: $(STAMP)

run: setup  ## land the default data (if the lake is empty) and run every stage
	$(BIN)/python -m ssl_assets run

test: setup  ## what CI runs: lint, format check, every test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

test-fast: setup  ## skip the slow end-to-end tests (CI still runs them)
	$(BIN)/pytest -m "not slow"

ui: setup  ## the Dagster UI on http://127.0.0.1:3000
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

summary: setup
	$(BIN)/python -m ssl_assets summary

clean-lake:  ## forget all results (the lake and the Dagster run history), keep the code
	rm -rf "$(SSL_LAKE)"
	find "$(DAGSTER_HOME)" -mindepth 1 ! -name dagster.yaml -exec rm -rf {} +
