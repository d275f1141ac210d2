# threadring.ringhub: one command for everything a newcomer or CI needs.
#   make test   set up (venv, pinned tools, PostgreSQL/Redis binaries, collection link) and run every suite
#   make demo   the main job against a local sandbox (see README)
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LINK := .collections/ansible_collections/threadring/ringhub
export PATH := $(CURDIR)/$(BIN):$(PATH)
export ANSIBLE_COLLECTIONS_PATH := $(CURDIR)/.collections
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help setup system-deps venv link test lint ruff ansible-lint changelog-lint sanity pytest unit integration molecule \
        build demo bench clean

help:
	@echo "make test    set up everything and run ruff, ansible-lint, ansible-test sanity, pytest, molecule"
	@echo "make demo    the main job against a local sandbox"
	@echo "make bench   benchmarks (bench/, not part of test)"
	@echo "parts: setup system-deps venv link lint sanity unit integration molecule build clean"

setup: system-deps venv link

system-deps:
	bash scripts/system-deps.sh

$(STAMP): requirements-dev.txt requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed, found " + sys.version.split()[0])'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt -r requirements.txt
	@touch $@

venv: $(STAMP)

link:
	@mkdir -p $(dir $(LINK))
	@if [ -L $(LINK) ] && [ "$$(readlink -f $(LINK))" = "$$(readlink -f .)" ]; then :; \
	 else rm -f $(LINK) && ln -s "$(CURDIR)" $(LINK) && echo "linked $(LINK) -> $(CURDIR)"; fi

test: setup
	@status=0; \
	for suite in lint sanity pytest molecule; do \
	  echo "=== $$suite ==="; \
	  if $(MAKE) --no-print-directory $$suite; then echo "=== $$suite: ok ==="; \
	  else echo "=== $$suite: FAILED ==="; status=1; fi; \
	done; \
	exit $$status

lint: ruff ansible-lint changelog-lint

changelog-lint: venv
	$(BIN)/antsibull-changelog lint

ruff: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

ansible-lint: venv link
	$(BIN)/ansible-lint --offline

sanity: venv
	bash scripts/sanity.sh

pytest: venv link
	$(BIN)/pytest

unit: venv link
	$(BIN)/pytest tests/unit

integration: venv link
	$(BIN)/pytest tests/integration

molecule: venv link
	$(BIN)/molecule test --all

build: venv
	@mkdir -p build
	$(BIN)/ansible-galaxy collection build --force --output-path build .

# make demo                    the reset of a local deployment; you type the confirmations (docs/demo.md)
# make demo DEMO_CONFIRM=yes     the same for scripts: the phrases are passed as extra vars
# make demo DEMO_ARGS='--keep /tmp/rh'   any scripts/demo.py options (--keep DIR, --hubs N)
DEMO_CONFIRM ?=
DEMO_ARGS ?=
demo: setup
	$(BIN)/python scripts/demo.py $(if $(filter yes,$(DEMO_CONFIRM)),--non-interactive) $(DEMO_ARGS)

bench: venv link
	@for script in bench/*.py; do echo "=== $$script ==="; $(BIN)/python $$script; done

clean:
	rm -rf build .pytest_cache .ruff_cache tests/output .collections
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +
