# Parley's entry points. `make demo` brings the service up locally, `make test` runs every
# test; both prepare what they need (virtualenv, Docker engine, base images) on their own.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV := .venv
# checkov pins packaging<24, which pytest 9 cannot share: it gets a virtualenv of its own.
CHECKOV_VENV := .venv-checkov
export CHECKOV := $(CURDIR)/$(CHECKOV_VENV)/bin/checkov
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# Keep Ansible's and Molecule's state inside the checkout, not in the caller's home.
export ANSIBLE_HOME := $(CURDIR)/.cache/ansible
export MOLECULE_GLOB := molecule/*/molecule.yml

# Every Molecule scenario the test command runs, longest first (two at a time).
SCENARIOS := fleet edge redis app-tier postgresql common
MOLECULE_WORKERS ?= 2

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --require-hashes -r requirements.txt
	touch $@

.PHONY: venv
venv: $(VENV)/.installed ## Create .venv with the pinned control-node tools

$(CHECKOV_VENV)/.installed: requirements-checkov.txt
	python3 -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --require-hashes -r requirements-checkov.txt
	touch $@

.PHONY: lock
lock: venv ## Re-pin requirements.txt (with hashes) from requirements.in
	$(VENV)/bin/pip install --quiet uv
	$(VENV)/bin/uv pip compile --quiet --python-version 3.11 --generate-hashes requirements.in -o requirements.txt
	$(VENV)/bin/uv pip compile --quiet --python-version 3.11 --generate-hashes requirements-checkov.in -o requirements-checkov.txt

.PHONY: testbed
testbed: ## Docker engine, base images, network and caches (idempotent)
	testbed/testbed prepare

.PHONY: lint
lint: venv ## yamllint, ansible-lint (production profile), ruff, role docs up to date
	yamllint --strict .
	ansible-lint
	ruff check --extend-exclude app .
	ruff format --check --extend-exclude app .
	scripts/role-docs --check

.PHONY: docs
docs: venv ## Regenerate every role README's variable table from its argument specs
	scripts/role-docs

.PHONY: molecule
molecule: venv testbed ## Run every Molecule scenario (converge, idempotence, verify)
	scripts/run-scenarios $(MOLECULE_WORKERS) $(SCENARIOS)

.PHONY: test-app
test-app: ## The chat application's own suite (real PostgreSQL, Redis, Celery, Chromium)
	$(MAKE) -C app test

.PHONY: test-terraform
test-terraform: venv $(CHECKOV_VENV)/.installed ## Terraform: fmt, terraform test, inventory through Ansible, firewall structure, checkov
	scripts/check-terraform

.PHONY: test-bench
test-bench: ## Benchmark smoke: the harness end to end in about a minute (asserts no time)
	bench/run --smoke

# `make test STRESS=1` runs the whole suite with a CPU hog beside it (scripts/with-stress:
# Debian's stress-ng --cpu 1, installed if missing, stopped at the end): no test may depend on
# how fast the machine is, and this is how that is tried.
STRESS ?=
.PHONY: test
ifeq ($(STRESS),1)
test:
	scripts/with-stress $(MAKE) test STRESS=
else
test: lint test-app test-terraform test-bench molecule ## Run every test: lint, the app's suite, Terraform, the benchmark smoke, each Molecule scenario (STRESS=1: beside a CPU hog)
	@echo "make test: every check passed"
endif

# `make audit ONLY=fuzz,csrf` runs some checks (no report); FRAMES sizes the fuzz campaign.
ONLY ?=
FRAMES ?=
.PHONY: audit
audit: venv testbed ## Attack and break the local fleet (converged first if down); writes RELIABILITY.md
	python -m audit $(if $(ONLY),--only $(ONLY)) $(if $(FRAMES),--frames $(FRAMES))

.PHONY: demo
demo: venv testbed ## Bring up the local demo host and converge it
	ansible-playbook playbooks/demo.yml

.PHONY: demo-down
demo-down: venv ## Remove the local demo containers
	ansible-playbook playbooks/demo.yml --tags down
