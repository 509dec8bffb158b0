# Every target does its own set-up: `make demo` and `make test` work on a fresh clone.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Python 3.13 matches the Lambda runtime: PATH first, then pyenv, then whatever python3 is.
PYTHON313 := $(shell for p in $$(command -v python3.13) $$(ls -d $$(pyenv root 2>/dev/null || echo $$HOME/.pyenv)/versions/3.13*/bin/python3.13 2>/dev/null | sort -rV); do "$$p" -c "" 2>/dev/null && { echo "$$p"; break; }; done)
PYTHON ?= $(if $(PYTHON313),$(PYTHON313),python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
SAM_VENV := .venv-sam
SAM := $(SAM_VENV)/bin/sam

.PHONY: help need-python313 venv test unit integration lint reliability demo bench sam-build sam-validate clean

help:
	@echo "make demo         the whole flow on a local AWS stand-in (moto on loopback)"
	@echo "make test         unit, integration, template lint and end-to-end tests"
	@echo "make reliability  hostile input, duplicate events and fault injection, as a table"
	@echo "make bench        build speed, layer size and cold start against the seed script"
	@echo "make venv         .venv with the layer-builder CLI at $(BIN)/layer-builder"

# The tests and the demo run handlers and import layers under the Lambda runtime's Python.
need-python313:
	@test -n "$(PYTHON313)" || { echo "Python 3.13 (the Lambda runtime's) was not found on PATH or in pyenv: install it, e.g. 'pyenv install 3.13'." >&2; exit 1; }

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip uv
	$(BIN)/uv pip install -q --python $(BIN)/python -e '.[dev]'
	@touch $@

venv: $(STAMP)

# The reliability table prints at the end of every run that recorded cases.
test: venv need-python313
	$(BIN)/python -m pytest -n auto -p tests.reliability.table $(PYTEST_ARGS)

unit: venv
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

integration: venv
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

lint: venv
	$(BIN)/cfn-lint template.yaml

reliability: venv
	$(BIN)/python -m pytest tests/reliability -p tests.reliability.table $(PYTEST_ARGS)

demo: venv need-python313
	$(BIN)/python -m tools.demo

bench: venv
	$(BIN)/python -m bench.run

# SAM CLI is large, so it lives in its own venv and only these targets install it.
$(SAM): 
	@test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install -q aws-sam-cli

# `sam build` without Docker needs a python3.13 on PATH matching the runtime: use pyenv's.
sam-build: $(SAM)
	PATH="$(dir $(PYTHON)):$$PATH" $(SAM) build

sam-validate: $(SAM)
	AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} $(SAM) validate --lint

clean:
	rm -rf $(VENV) $(SAM_VENV) .aws-sam .pytest_cache out
