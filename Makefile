# One entry point for people and CI. Every target sets up what it needs, idempotently.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
PY_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
# checkov's dependencies conflict with the project's pins, so it has a venv of its own.
CHECKOV_VENV ?= .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
CHECKOV := $(CHECKOV_VENV)/bin/checkov
CDK := npx --no-install cdk --no-notices
ENV ?= dev
ARGS ?=

# The machine may be offline and CI must never prompt.
export CDK_DISABLE_CLI_TELEMETRY := true
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help setup container-tool synth lint test local-run runs emulator deploy destroy bench clean

help:  ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

setup: $(PY_STAMP) $(NODE_STAMP)  ## Python venv + pinned CDK CLI (idempotent).

$(PY_STAMP): requirements.txt requirements-dev.txt container/requirements.txt container/user_model/requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==25.3
	$(PY) -m pip install --quiet -r requirements-dev.txt
	# This checkout's packages and console scripts (mlpipe-local-run, mlpipe-runs, mlpipe-emulator).
	$(PY) -m pip install --quiet --no-deps --no-build-isolation --editable .
	touch $@

$(CHECKOV_STAMP): requirements-checkov.txt
	test -x $(CHECKOV_VENV)/bin/python || python3 -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip==25.3
	$(CHECKOV_VENV)/bin/python -m pip install --quiet -r requirements-checkov.txt
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

container-tool:  ## Container engine for image builds (docker if an engine runs, else rootful podman).
	bash scripts/setup-container-tool.sh

synth: setup  ## Synthesize all stacks with cdk-nag (fails on any finding).
	$(CDK) synth --quiet $(if $(CONTEXT),$(CONTEXT),)

# checkov fails lint on any failed check; accepted ones are skipped in resource metadata (stacks/checkov_skips.py).
lint: setup $(CHECKOV_STAMP)  ## ruff, plus cfn-lint and checkov on freshly synthesized templates.
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(CDK) synth --quiet
	$(VENV)/bin/cfn-lint cdk.out/*.template.json
	$(CHECKOV) --quiet --compact --skip-download --framework cloudformation $$(printf -- '-f %s ' cdk.out/*.template.json)

test: setup container-tool $(CHECKOV_STAMP)  ## Lint, then every test (stacks, lambdas, container image, e2e).
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest $(PYTEST_ARGS)

local-run: setup container-tool  ## Run one whole pipeline execution locally (ARGS="--help" for options).
	$(VENV)/bin/mlpipe-local-run $(ARGS)

runs: setup  ## List audit records (ARGS="--endpoint-url http://127.0.0.1:PORT --status Failed").
	$(VENV)/bin/mlpipe-runs $(ARGS)

emulator: setup  ## Start an emulator that outlives single runs (pass its URL to local-run/runs as --endpoint-url).
	$(VENV)/bin/mlpipe-emulator $(ARGS)

deploy: setup  ## Deploy the three stacks to the AWS account in your credentials.
	$(CDK) deploy --all $(ARGS)

destroy: setup  ## Tear down the pipeline and deploy stacks; the data stack (buckets, table, key) is retained.
	$(CDK) destroy ModelDeploy-$(ENV) TrainingPipeline-$(ENV) $(ARGS)

bench: setup container-tool  ## Benchmarks: Lambda cold imports, serving, training, multi-host training, the local run.
	$(PY) bench/lambda_imports.py
	$(PY) bench/serve.py --container
	$(PY) bench/train.py
	PYTHONPATH=container $(PY) bench/multihost.py
	$(PY) bench/local_run.py

clean:  ## Remove build output (keeps the venv, node_modules and the container cache).
	rm -rf cdk.out .pytest_cache .ruff_cache .local-run
