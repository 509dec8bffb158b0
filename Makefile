# Every target does its own set-up: `make demo` and `make test` work on a fresh clone.
# `make help` lists the targets: a target is listed by the `## ` comment on its line.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Python 3.13 matches the Lambda runtime: PATH, then pyenv, else `uv python install 3.13`
# (tools/python313.sh says what it does). Evaluated once, and only by targets that need it.
PYTHON313 = $(eval PYTHON313 := $(shell tools/python313.sh))$(PYTHON313)
PYTHON ?= $(PYTHON313)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
SAM_VENV := .venv-sam
SAM := $(SAM_VENV)/bin/sam
BUILD_DIR := .aws-sam/build
# make local-invoke FUNCTION=EmrTriggerFunction EVENT=events/emr-direct.json LAYER=layer.zip
FUNCTION ?= EmrTriggerFunction
EVENT ?= events/emr-direct.json
LAYER ?=
UPLOAD ?=
ENV_VARS ?= events/env.json
# make local-aws LOCAL_AWS_HOST=0.0.0.0 lets containers (sam local invoke) reach it.
LOCAL_AWS_PORT ?= 5000
LOCAL_AWS_HOST ?= 127.0.0.1
# make lint: the engine, the service and the handlers.
LINT_PATHS := builder_function emr_function $(wildcard check_function)
HANDLERS := $(wildcard builder_function/*.py emr_function/app.py check_function/app.py)

.PHONY: help need-python313 venv test unit integration reliability browser lint demo bench \
        local-aws build local-invoke env-vars sam-build sam-validate lock-requirements clean

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "make %-14s %s\n", $$1, $$2}'

# The tests and the demo run handlers and import layers under the Lambda runtime's Python.
need-python313: ## check for Python 3.13 (installs one with uv when none is found)
	@test -n "$(PYTHON313)" || { echo "Python 3.13 (the Lambda runtime's) was not found on PATH or in pyenv, and 'uv python install 3.13' failed: install it, e.g. 'pyenv install 3.13'." >&2; exit 1; }

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || { $(MAKE) --no-print-directory need-python313 && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install -q --upgrade pip uv
	$(BIN)/uv pip install -q --python $(BIN)/python -e '.[dev]'
	@touch $@

venv: $(STAMP) ## .venv with the layer-builder CLI at .venv/bin/layer-builder

# `make lint` first; the reliability table prints at the end of every run that recorded cases.
test: venv need-python313 lint ## lint, then unit, integration, browser, reliability and end-to-end tests (CI)
	PATH="$(dir $(PYTHON313)):$$PATH" $(BIN)/python -m pytest -n auto -p tests.reliability.table $(PYTEST_ARGS)

unit: venv ## unit tests only
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

integration: venv ## integration tests only (real CLI processes, real installs)
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

reliability: venv ## hostile input, duplicate events and fault injection, as a table
	$(BIN)/python -m pytest tests/reliability -p tests.reliability.table $(PYTEST_ARGS)

browser: venv ## the HTML report in Debian's chromium (apt-get install -y chromium)
	$(BIN)/python -m pytest tests/browser $(PYTEST_ARGS)

lint: venv ## cfn-lint, ruff (lint and format check) and mypy on the engine, service and handlers
	@# Every step runs, so one pass shows everything; the target fails if any step failed.
	@# Each handler is a module named `app`: one mypy run per file keeps the names apart.
	@status=0; \
	for step in "$(BIN)/cfn-lint template.yaml" "$(BIN)/ruff check $(LINT_PATHS)" \
	            "$(BIN)/ruff format --check $(LINT_PATHS)" "$(BIN)/mypy builder_function/layer_builder"; do \
		echo "== $$step"; $$step || status=1; done; \
	for f in $(HANDLERS); do echo "== mypy $$f"; \
		(cd $$(dirname $$f) && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml $$(basename $$f)) || status=1; done; \
	exit $$status

demo: venv need-python313 ## the whole flow on a local AWS stand-in (moto on loopback)
	PATH="$(dir $(PYTHON313)):$$PATH" $(BIN)/python -m tools.demo

bench: venv ## build speed, layer size and cold start against the seed script
	$(BIN)/python -m bench.run --fixture heavy
	$(BIN)/python -m bench.run --fixture native

local-aws: venv ## the local AWS stand-in alone, template.yaml deployed; prints its endpoint
	$(BIN)/python -m tools.local_aws --deploy --port $(LOCAL_AWS_PORT) --host $(LOCAL_AWS_HOST)

build: venv need-python313 ## .aws-sam/build/<Function> as `sam build` makes it (aws-lambda-builders)
	PATH="$(dir $(PYTHON313)):$$PATH" $(BIN)/python -m tools.sam_local build --build-dir $(BUILD_DIR)

# `sam local invoke $(FUNCTION) -e $(EVENT) --env-vars events/env.json`, without Docker.
local-invoke: venv need-python313 ## run FUNCTION with EVENT from .aws-sam/build, like sam local invoke
	@test -d $(BUILD_DIR)/$(FUNCTION) || $(MAKE) --no-print-directory build
	$(BIN)/python -m tools.sam_local invoke $(FUNCTION) -e $(EVENT) -n $(ENV_VARS) \
		--build-dir $(BUILD_DIR) $(foreach l,$(LAYER),--layer $(l)) $(if $(UPLOAD),--upload $(UPLOAD))

env-vars: venv ## regenerate events/env.json from template.yaml (after changing the template)
	$(BIN)/python -m tools.sam_local env-vars > $(ENV_VARS)

# SAM CLI is large, so it lives in its own venv and only these targets install it.
$(SAM):
	@test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install -q aws-sam-cli

sam-build: $(SAM) need-python313 ## sam build (SAM CLI in .venv-sam) with a python3.13 on PATH
	PATH="$(dir $(PYTHON313)):$$PATH" $(SAM) build

sam-validate: $(SAM) ## sam validate --lint
	AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} $(SAM) validate --lint

# The functions' requirements.txt, hash-locked from pyproject.toml (tools/lock_requirements.py).
lock-requirements: venv ## the functions' requirements.txt, hash-locked from pyproject.toml
	$(BIN)/python -m tools.lock_requirements

clean: ## remove the venvs, build output and caches
	rm -rf $(VENV) $(SAM_VENV) .venv-uv .aws-sam .pytest_cache out
