# The commands for a new machine: `make demo`, `make test` and `make local`. Each installs what it needs.
SHELL := /bin/bash
# jsii prints an end-of-life banner for Node 20 on every synth (the value lists the majors to
# silence); the CDK still runs on it. Node 22 or 24 needs no such line.
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# checkov in a venv of its own: its pins contradict requirements-dev.txt (requirements-checkov.txt).
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed

.PHONY: demo test checkov local local-down local-env lint typecheck contracts pytest synth bench clean images images-test podman base-image wheels

$(STAMP): requirements-dev.txt runtime/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

$(CHECKOV_STAMP): requirements-checkov.txt
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --quiet -r requirements-checkov.txt
	touch $@

node_modules/.installed: package.json
	npm install --no-audit --no-fund --silent
	touch $@

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/demo.sh

# One environment deployed into a moto server with the real cdk CLI, then checked and run
# from the deployed definitions (docs/local.md). The server keeps running: `make local-down`.
LOCAL_ENV ?= dsc-recs-dev
local: $(STAMP) node_modules/.installed
	PATH="$(CURDIR)/$(BIN):$$PATH" $(PY) -m stacks.local up $(LOCAL_ENV)

local-down: $(STAMP)
	$(PY) -m stacks.local down

# `eval "$$(make -s local-env)"`: DSC_* and AWS_* exports naming what `make local` deployed.
local-env: $(STAMP)
	@$(PY) -m stacks.local env $(LOCAL_ENV)

test: $(STAMP) node_modules/.installed lint typecheck contracts pytest images-test

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

contracts: $(STAMP)
	$(BIN)/lint-imports

pytest: $(STAMP) $(CHECKOV_STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest

# checkov over every environment's templates: each failure with its justification from
# docs/security.md, or UNJUSTIFIED (tests/stacks/test_checkov.py fails on those and on stale rows).
checkov: $(STAMP) $(CHECKOV_STAMP)
	$(PY) -m tests.stacks.checkov

synth: $(STAMP) node_modules/.installed
	PATH="$(CURDIR)/$(BIN):$$PATH" npx cdk synth --quiet

# The images (docs/images.md): podman/buildah with this machine's settings from ../shared.
CONTAINERS ?= $(CURDIR)/../shared/containers
WITH_CONTAINERS := . $(CONTAINERS)/env.sh &&
BASE_IMAGE := docker.io/library/python:3.11-slim

podman:
	@if ! command -v podman >/dev/null || ! command -v buildah >/dev/null \
	    || ! command -v runc >/dev/null || ! command -v debootstrap >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      podman buildah runc debootstrap >/dev/null; \
	  else \
	    echo "install podman, buildah, runc and debootstrap (apt-get needs root here)" >&2; exit 1; \
	  fi; \
	fi

# No image registry is reachable: python:3.11-slim is made locally from Debian bookworm.
base-image: podman
	@$(WITH_CONTAINERS) podman image exists $(BASE_IMAGE) || $(CONTAINERS)/base-image.sh >/dev/null

wheels: $(STAMP)
	PIP=$(BIN)/pip docker/fetch-wheels.sh

images: base-image wheels
	@$(WITH_CONTAINERS) docker/build-images.sh

# Each image started as its platform starts it (tests/docker/test_*_image.py).
images-test: $(STAMP) images
	$(WITH_CONTAINERS) PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest -m images tests/docker

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) node_modules cdk.out cdk.out.local .dsc wheels
