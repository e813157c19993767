# dynamem: every target sets itself up (virtualenv, packages, control-plane binaries) on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DYNAMEM_CACHE ?= $(HOME)/.cache/dynamem

.PHONY: help venv lint typecheck unit integration test controlplane prometheus guestlab cluster cluster-down demo bench clean kind

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP) ## Create .venv and install dynamem with its test extras

prometheus: ## Install the Prometheus server (Debian package) if it is missing
	@command -v prometheus >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; }

guestlab: $(STAMP) ## Install QEMU, a kernel, busybox (Debian packages) if missing; build the guest lab's initramfs
	@command -v qemu-system-x86_64 >/dev/null && ls /boot/vmlinuz-* >/dev/null 2>&1 && test -x /bin/busybox \
		|| { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			qemu-system-x86 linux-image-amd64 busybox-static gcc libc6-dev; }
	$(BIN)/python -m dynamem.testing.guest

controlplane: ## Build (or reuse) kube-apiserver, kube-scheduler, etcd, kwok and KubeVirt's CRDs into $(DYNAMEM_CACHE)
	tools/build-controlplane.sh

lint: $(STAMP) ## ruff, import-linter and hadolint
	$(BIN)/ruff check operator tests bench
	$(BIN)/ruff format --check operator tests bench
	$(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile

typecheck: $(STAMP) ## mypy --strict on the package
	$(BIN)/mypy

unit: $(STAMP) ## Fast tests: no servers
	$(BIN)/pytest tests/unit

integration: $(STAMP) controlplane prometheus guestlab ## Tests against a real kube-apiserver, etcd and Prometheus
	$(BIN)/pytest tests/integration

test: $(STAMP) controlplane prometheus guestlab lint typecheck ## Everything CI runs: lint, types, unit, property and integration tests
	$(BIN)/pytest tests

cluster: $(STAMP) controlplane prometheus ## Start a local control plane in the background; prints the KUBECONFIG export
	$(BIN)/python -m dynamem.testing.cluster up

cluster-down: $(STAMP) ## Stop the local control plane started by 'make cluster'
	$(BIN)/python -m dynamem.testing.cluster down

demo: $(STAMP) controlplane prometheus ## Play the seed's workday on a local control plane with the operator; writes demo.png
	$(BIN)/dynamem demo --out demo.png

bench: $(STAMP) ## Policy comparison, density and speed benchmarks
	$(BIN)/python bench/compare.py
	$(BIN)/python bench/compare.py --interval 1m
	$(BIN)/python bench/density.py
	$(BIN)/python bench/cluster_speed.py
	$(BIN)/python bench/policy_speed.py

clean: ## Remove the virtualenv and build outputs (not the control-plane cache)
	rm -rf $(VENV) build *.egg-info operator/*.egg-info .pytest_cache .mypy_cache .ruff_cache

kind: ## Try dynamem on kind (needs Docker, kind, kubectl): KubeVirt v1.7.0, Prometheus, dynamem:dev, examples
	tools/kind-up.sh
